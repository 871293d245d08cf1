// What the emulator checks (attention_check.cpp, decode_check.cpp) share: f16 conversions for building inputs and the case
// report that GpuEmulatorTests reads ("ok"/"FAIL" lines, then "cases: N, failed: M"; exit 1 when a case failed).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace report
{
inline unsigned short to_half(float f) { return __builtin_bit_cast(unsigned short, (_Float16)f); }
inline float from_half(unsigned short h) { return (float)__builtin_bit_cast(_Float16, h); }
// The f16 at p (any alignment).
inline double half_at(const unsigned char* p) { unsigned short h; std::memcpy(&h, p, 2); return from_half(h); }

inline int& cases() { static int n = 0; return n; }
inline int& failed() { static int n = 0; return n; }

// A case that passes or fails as a whole (bit-for-bit comparisons).
inline void exact(const std::string& what, bool ok, const char* detail)
{
    cases()++;
    if (!ok) failed()++;
    std::printf("%s %s: %s\n", ok ? "ok  " : "FAIL", what.c_str(), detail);
}

// Passes when every element is within `tolerance` of the largest |want|: errors are measured against the output's scale
// (a Q8_0 value is up to 127 d). NaN counts as the worst error.
inline void close(const std::string& what, const std::vector<float>& got, const std::vector<double>& want, double tolerance)
{
    double worst = 0, size = 1e-3;
    for (double w : want) size = std::max(size, std::fabs(w));
    for (size_t i = 0; i < want.size(); i++)
    {
        double err = std::fabs((double)got[i] - want[i]) / size;
        if (!(err <= worst)) worst = err;
    }
    bool ok = worst <= tolerance;
    cases()++;
    if (!ok) failed()++;
    std::printf("%s %s: max |error| / max |out| %.3g\n", ok ? "ok  " : "FAIL", what.c_str(), worst);
}

// The closing line and the exit status.
inline int summary()
{
    std::printf("cases: %d, failed: %d\n", cases(), failed());
    return failed() ? 1 : 0;
}
} // namespace report

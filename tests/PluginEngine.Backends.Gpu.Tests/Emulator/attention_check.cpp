// Runs every one-token, rows and per-token attention kernel of kernels.cu on the CPU emulator (gpu_emulator.h) and compares
// each output with attention computed in double from the same cache values (docs/gpu-kernels.md#kernels-on-the-cpu).
// Built and run by GpuEmulatorTests:
//   g++ -std=c++17 -O1 -ffp-contract=off -include gpu_emulator.h attention_check.cpp   (unit.cu: KernelSource's HIP unit)
// Prints one line per case and "cases: N, failed: M"; exits 1 when a case is off by more than its tolerance.
#include "unit.cu"
#include "check_report.h"

#include <random>

namespace
{
typedef void (*TokenKernel)(const float*, const void*, const void*, float*, int, int, int, int, float, i8*, XScale*);
typedef void (*SplitKernel)(const float*, const void*, const void*, float*, int, int, int, int, float, i8*, XScale*, float*, int*, int);
typedef void (*RowsKernel)(const float*, const void*, const void*, float*, const int*, int, int, int, float, i8*, XScale*);

struct Family { int type; const char* name; TokenKernel token, decode, decodeNarrow; SplitKernel split, splitNarrow; RowsKernel rows, rowsNarrow; };

const Family families[] = {
    {T_F32, "f32", attention_f32, attention_decode_f32, attention_decode_f32_h128, attention_split_f32, attention_split_f32_h128, attention_rows_f32, attention_rows_f32_h128},
    {T_F16, "f16", attention_f16, attention_decode_f16, attention_decode_f16_h128, attention_split_f16, attention_split_f16_h128, attention_rows_f16, attention_rows_f16_h128},
    {T_Q8_0, "q8_0", attention_q8_0, attention_decode_q8_0, attention_decode_q8_0_h128, attention_split_q8_0, attention_split_q8_0_h128, attention_rows_q8_0, attention_rows_q8_0_h128},
    {T_Q4_0, "q4_0", attention_q4_0, attention_decode_q4_0, attention_decode_q4_0_h128, attention_split_q4_0, attention_split_q4_0_h128, attention_rows_q4_0, attention_rows_q4_0_h128},
};

using report::from_half;
using report::to_half;

// A cache of `rows` positions x `stride` elements of type `type`, random, with the values it holds (what a kernel must read).
struct Cache
{
    std::vector<unsigned char> bytes; // `offset` bytes of padding first, so a cache can start misaligned
    std::vector<double> values;
    size_t offset = 0;
    const void* data() const { return bytes.data() + offset; }
};

Cache make_cache(int type, long rows, long stride, size_t offset, std::mt19937& rng)
{
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    long n = rows * stride;
    Cache c;
    c.offset = offset;
    c.values.resize(n);
    if (type == T_F32 || type == T_F16)
    {
        size_t size = type == T_F32 ? 4 : 2;
        c.bytes.assign(offset + n * size, 0);
        for (long i = 0; i < n; i++)
        {
            float f = uni(rng);
            if (type == T_F32) std::memcpy(&c.bytes[offset + 4 * i], &f, 4);
            else { unsigned short h = to_half(f); std::memcpy(&c.bytes[offset + 2 * i], &h, 2); f = from_half(h); }
            c.values[i] = f;
        }
        return c;
    }
    size_t block = type == T_Q8_0 ? 34 : 18;
    c.bytes.assign(offset + (n / 32) * block, 0);
    for (long b = 0; b < n / 32; b++)
    {
        unsigned char* p = &c.bytes[offset + b * block];
        unsigned short d = to_half(0.01f + 0.05f * (uni(rng) + 1.f));
        std::memcpy(p, &d, 2);
        double scale = from_half(d);
        for (int r = 0; r < 32; r++)
        {
            int q;
            if (type == T_Q8_0) { q = (int)(rng() % 255) - 127; p[2 + r] = (unsigned char)(signed char)q; }
            else
            {
                q = (int)(rng() % 16);
                if (r < 16) p[2 + r] = (unsigned char)((p[2 + r] & 0xF0) | q);
                else p[2 + r - 16] = (unsigned char)((p[2 + r - 16] & 0x0F) | (q << 4));
                q -= 8;
            }
            c.values[b * 32 + r] = scale * q;
        }
    }
    return c;
}

// out[h, :] of one query q[h, :] over positions [first, first + count) of the caches (kv head h / (heads / kvHeads)).
void reference(const float* q, const Cache& k, const Cache& v, long first, long count, int heads, int kvHeads, int headSize, float scale, double* out)
{
    long stride = (long)kvHeads * headSize;
    for (int h = 0; h < heads; h++)
    {
        int kh = h / (heads / kvHeads);
        std::vector<double> s(count);
        double m = -1e300;
        for (long p = 0; p < count; p++)
        {
            double dot = 0;
            for (int e = 0; e < headSize; e++) dot += (double)q[h * headSize + e] * scale * k.values[(first + p) * stride + kh * headSize + e];
            s[p] = dot;
            if (dot > m) m = dot;
        }
        double sum = 0;
        for (long p = 0; p < count; p++) { s[p] = std::exp(s[p] - m); sum += s[p]; }
        for (int e = 0; e < headSize; e++)
        {
            double acc = 0;
            for (long p = 0; p < count; p++) acc += s[p] * v.values[(first + p) * stride + kh * headSize + e];
            out[h * headSize + e] = acc / sum;
        }
    }
}

// Float sums of a few hundred terms: within 1e-5 of the output's scale.
void check(const std::string& what, const std::vector<float>& got, const std::vector<double>& want) { report::close(what, got, want, 1e-5); }

const EmuDim block = {ATTENTION_WARPS * 32, 1, 1};
} // namespace

int main()
{
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    const int heads = 4, kvHeads = 2;
    for (const Family& f : families)
        for (int headSize : {64, 128, 256})
            for (bool aligned : {true, false})
            {
                size_t misalign = f.type == T_F32 ? 4 : f.type == T_F16 ? 2 : 1; // breaks attend's `vector` condition
                long stride = (long)kvHeads * headSize, rows = 700;
                Cache k = make_cache(f.type, rows, stride, aligned ? 0 : misalign, rng), v = make_cache(f.type, rows, stride, aligned ? 0 : misalign, rng);
                float scale = 1.f / std::sqrt((float)headSize) * 4.f; // sharper than 1/sqrt(d), so the softmax is not flat
                std::string tag = std::string(f.name) + " head " + std::to_string(headSize) + (aligned ? "" : " misaligned");
                bool narrow = headSize <= 128;
                // One decode token at several history lengths: the decode kernels, the split kernels over several chunks.
                for (int positions : {1, 3, 65, 700})
                {
                    std::vector<float> q(heads * headSize), out(heads * headSize, NAN);
                    for (float& x : q) x = uni(rng);
                    std::vector<double> want(heads * headSize);
                    reference(q.data(), k, v, 0, positions, heads, kvHeads, headSize, scale, want.data());
                    std::string at = tag + " positions " + std::to_string(positions);
                    for (int n = 0; n < (narrow ? 2 : 1); n++)
                    {
                        TokenKernel decode = n ? f.decodeNarrow : f.decode;
                        std::fill(out.begin(), out.end(), NAN);
                        emu::launch({(unsigned)heads, 1, 1}, block, [&] { decode(q.data(), k.data(), v.data(), out.data(), positions - 1, heads, kvHeads, headSize, scale, nullptr, nullptr); });
                        check(std::string("attention_decode_") + f.name + (n ? "_h128 " : " ") + at, out, want);
                        SplitKernel split = n ? f.splitNarrow : f.split;
                        for (int chunk : {16, 100})
                        {
                            int splits = (positions + chunk - 1) / chunk;
                            std::vector<float> partial((size_t)heads * splits * (headSize + 2));
                            std::vector<int> tickets(heads, 0);
                            std::fill(out.begin(), out.end(), NAN);
                            emu::launch({(unsigned)heads, (unsigned)splits, 1}, block, [&] {
                                split(q.data(), k.data(), v.data(), out.data(), positions - 1, heads, kvHeads, headSize, scale, nullptr, nullptr, partial.data(), tickets.data(), chunk); });
                            check(std::string("attention_split_") + f.name + (n ? "_h128 " : " ") + at + " chunk " + std::to_string(chunk), out, want);
                        }
                    }
                }
                // A 3-token prompt after 40 cached positions (causal): the per-token kernel.
                {
                    const int tokens = 3, first = 40;
                    std::vector<float> q(tokens * heads * headSize), out(q.size(), NAN);
                    for (float& x : q) x = uni(rng);
                    std::vector<double> want(q.size());
                    for (int t = 0; t < tokens; t++)
                        reference(q.data() + t * heads * headSize, k, v, 0, first + t + 1, heads, kvHeads, headSize, scale, want.data() + t * heads * headSize);
                    emu::launch({(unsigned)heads, (unsigned)tokens, 1}, block, [&] { f.token(q.data(), k.data(), v.data(), out.data(), first, heads, kvHeads, headSize, scale, nullptr, nullptr); });
                    check(std::string("attention_") + f.name + " " + tag + " prompt of 3 after 40", out, want);
                }
                // Two sequences' rows in one batch: row 0 is position 9 of a sequence whose cache starts at row 100, row 1
                // position 250 of one starting at row 300.
                for (int n = 0; n < (narrow ? 2 : 1); n++)
                {
                    const int rowInfo[4] = {9, 100, 250, 300};
                    std::vector<float> q(2 * heads * headSize), out(q.size(), NAN);
                    for (float& x : q) x = uni(rng);
                    std::vector<double> want(q.size());
                    for (int t = 0; t < 2; t++)
                        reference(q.data() + t * heads * headSize, k, v, rowInfo[2 * t + 1], rowInfo[2 * t] + 1, heads, kvHeads, headSize, scale, want.data() + t * heads * headSize);
                    RowsKernel rows = n ? f.rowsNarrow : f.rows;
                    emu::launch({(unsigned)heads, 2, 1}, block, [&] { rows(q.data(), k.data(), v.data(), out.data(), rowInfo, heads, kvHeads, headSize, scale, nullptr, nullptr); });
                    check(std::string("attention_rows_") + f.name + (n ? "_h128 " : " ") + tag + " two sequences", out, want);
                }
            }
    return report::summary();
}

// Runs the decode step's activation quantizer and mat-vecs of kernels.cu on the CPU emulator (gpu_emulator.h) and compares
// them with the same products computed in double (docs/gpu-kernels.md#kernels-on-the-cpu):
//  - quantize_x_q8 against its definition (d = max|x| / 127, q = round(x / d), s = d · Σq), bit for bit;
//  - matvec_q8_{q4_0,q8_0,q4_k,q6_k} (three targets in one launch, set and +=) and matmul_q8_* (three tokens) against the
//    dequantized weights times the dequantized 8-bit activations;
//  - matvec_f16 (F32 activations) against the F16 weights times x;
//  - rms_norm_q8_row and swiglu_q8_* against their definitions in double, and their quantized outputs bit for bit.
// Launch shapes are LaunchGeometry's (MatVecQ8, MatMulQ8, QuantizeX). Built and run by GpuEmulatorTests like attention_check.
#include "unit.cu"
#include "check_report.h"

#include <algorithm>
#include <random>
#include <string>

namespace
{
using report::half_at;
using report::to_half;

void check(const std::string& what, const std::vector<float>& got, const std::vector<double>& want, double tolerance) { report::close(what, got, want, tolerance); }

struct Type { int type; const char* name; int blockElements, blockBytes; };
const Type types[] = {{T_Q4_0, "q4_0", 32, 18}, {T_Q8_0, "q8_0", 32, 34}, {T_Q4_K, "q4_k", 256, 144}, {T_Q6_K, "q6_k", 256, 210}};

// Random blocks of `type` (scales small and finite, every other byte random).
void random_blocks(const Type& t, unsigned char* p, long blocks, std::mt19937& rng)
{
    std::uniform_real_distribution<float> scale(0.002f, 0.02f);
    for (long b = 0; b < blocks; b++, p += t.blockBytes)
    {
        for (int i = 0; i < t.blockBytes; i++) p[i] = (unsigned char)rng();
        unsigned short d = to_half(scale(rng)), dmin = to_half(scale(rng));
        if (t.type == T_Q4_0 || t.type == T_Q8_0 || t.type == T_Q4_K) std::memcpy(p, &d, 2);
        if (t.type == T_Q4_K) std::memcpy(p + 2, &dmin, 2);
        if (t.type == T_Q6_K) std::memcpy(p + 208, &d, 2);
    }
}

// The GGUF meaning of one block's 32 or 256 elements.
void dequantize(const Type& t, const unsigned char* b, double* out)
{
    if (t.type == T_Q4_0)
        for (int r = 0; r < 32; r++) out[r] = half_at(b) * ((r < 16 ? b[2 + r] & 15 : b[2 + r - 16] >> 4) - 8);
    else if (t.type == T_Q8_0)
        for (int r = 0; r < 32; r++) out[r] = half_at(b) * (signed char)b[2 + r];
    else if (t.type == T_Q4_K)
    {
        const unsigned char* s = b + 4;
        for (int sub = 0; sub < 8; sub++)
        {
            int sc, m;
            if (sub < 4) { sc = s[sub] & 63; m = s[sub + 4] & 63; }
            else { sc = (s[sub + 4] & 15) | ((s[sub - 4] >> 6) << 4); m = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4); }
            for (int l = 0; l < 32; l++)
            {
                int q = b[16 + 32 * (sub / 2) + l] >> (sub % 2 ? 4 : 0) & 15;
                out[32 * sub + l] = half_at(b) * sc * q - half_at(b + 2) * m;
            }
        }
    }
    else // Q6_K: ql[128], qh[64], scales[16], d
        for (int e = 0; e < 256; e++)
        {
            int h = e / 128, r = e % 128, g = r / 32, l = r % 32;
            int low = b[h * 64 + (g & 1) * 32 + l] >> (g >= 2 ? 4 : 0) & 15, high = b[128 + h * 32 + l] >> (2 * g) & 3;
            out[e] = half_at(b + 208) * (signed char)b[192 + h * 8 + l / 16 + 2 * g] * ((low | high << 4) - 32);
        }
}

struct Matrix { std::vector<unsigned char> bytes; std::vector<double> values; long rows; int cols; long rowBytes; };

Matrix random_matrix(const Type& t, long rows, int cols, std::mt19937& rng)
{
    Matrix m{{}, {}, rows, cols, (long)cols / t.blockElements * t.blockBytes};
    m.bytes.resize(rows * m.rowBytes);
    m.values.resize(rows * cols);
    random_blocks(t, m.bytes.data(), rows * cols / t.blockElements, rng);
    for (long b = 0; b < rows * cols / t.blockElements; b++) dequantize(t, m.bytes.data() + b * t.blockBytes, m.values.data() + b * t.blockElements);
    return m;
}

// Whether xq / xs are x quantized by the definition (d = max|x| / 127, q = round(x / d), s = d · Σq), bit for bit; xd gets
// the dequantized values d · q.
bool quantized_exactly(const std::vector<float>& x, const i8* xq, const XScale* xs, std::vector<double>& xd)
{
    long blocks = (long)x.size() / 32;
    xd.assign(x.size(), 0.0);
    bool exact = true;
    for (long b = 0; b < blocks; b++)
    {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[32 * b + i]));
        float d = amax / 127.f;
        int sum = 0;
        for (int i = 0; i < 32; i++)
        {
            int q = amax == 0.f ? 0 : (int)std::nearbyint(x[32 * b + i] / d);
            exact &= xq[32 * b + i] == q;
            sum += q;
            xd[32 * b + i] = (double)xs[b].d * xq[32 * b + i];
        }
        exact &= xs[b].d == d && xs[b].s == d * (float)sum;
    }
    return exact;
}

// xq / xs of `tokens` rows of x by the kernel, checked against the definition; returns the dequantized activations.
std::vector<double> quantize(const std::vector<float>& x, std::vector<i8>& xq, std::vector<XScale>& xs)
{
    long blocks = (long)x.size() / 32;
    xq.assign(x.size(), 0);
    xs.assign(blocks, XScale{});
    emu::launch({(unsigned)((blocks + 7) / 8), 1, 1}, {256, 1, 1}, [&] { quantize_x_q8(x.data(), xq.data(), xs.data(), blocks); });
    std::vector<double> xd;
    bool exact = quantized_exactly(x, xq.data(), xs.data(), xd);
    report::exact("quantize_x_q8 of " + std::to_string(blocks) + " blocks", exact, exact ? "bit for bit" : "differs from its definition");
    return xd;
}
} // namespace

int main()
{
    std::mt19937 rng(4321);
    std::uniform_real_distribution<float> uni(-1.f, 1.f);
    for (const Type& t : types)
        for (int cols : {512, 1536})
        {
            std::string tag = std::string(t.name) + " cols " + std::to_string(cols);
            // One token, three targets (q, k, v shaped: the rows of each are not multiples of the 4 warps of a block).
            const long targetRows[3] = {70, 33, 5};
            Matrix w[3] = {random_matrix(t, targetRows[0], cols, rng), random_matrix(t, targetRows[1], cols, rng), random_matrix(t, targetRows[2], cols, rng)};
            std::vector<float> x(cols);
            for (float& v : x) v = uni(rng);
            std::vector<i8> xq;
            std::vector<XScale> xs;
            std::vector<double> xd = quantize(x, xq, xs);
            for (int accumulate : {0, 1})
            {
                std::vector<float> y[3];
                std::vector<double> want[3];
                MatVecTargets a{};
                a.count = 3;
                a.accumulate = accumulate;
                long total = 0;
                for (int i = 0; i < 3; i++)
                {
                    y[i].assign(targetRows[i], 0.f);
                    want[i].assign(targetRows[i], 0.0);
                    for (long r = 0; r < targetRows[i]; r++)
                    {
                        y[i][r] = accumulate ? uni(rng) : NAN;
                        double dot = accumulate ? y[i][r] : 0.0;
                        for (int e = 0; e < cols; e++) dot += w[i].values[r * cols + e] * xd[e];
                        want[i][r] = dot;
                    }
                    a.t[i] = MatVecTarget{w[i].bytes.data(), w[i].rowBytes, y[i].data(), (int)targetRows[i], 0};
                    total += targetRows[i];
                }
                void (*matvec)(MatVecTargets, int, const i8*, const XScale*) =
                    t.type == T_Q4_0 ? matvec_q8_q4_0 : t.type == T_Q8_0 ? matvec_q8_q8_0 : t.type == T_Q4_K ? matvec_q8_q4_k : matvec_q8_q6_k;
                emu::launch({(unsigned)((total + 3) / 4), 1, 1}, {128, 1, 1}, [&] { matvec(a, cols, xq.data(), xs.data()); });
                for (int i = 0; i < 3; i++)
                    check(std::string("matvec_q8_") + tag + " target " + std::to_string(i) + (accumulate ? " +=" : ""), y[i], want[i], 1e-5);
            }
            // Three tokens through the batch kernel (one weight).
            {
                const int tokens = 3;
                std::vector<float> xt(tokens * cols);
                for (float& v : xt) v = uni(rng);
                std::vector<i8> tq;
                std::vector<XScale> ts;
                std::vector<double> td = quantize(xt, tq, ts);
                std::vector<float> y(tokens * w[0].rows, NAN);
                std::vector<double> want(y.size());
                for (int k = 0; k < tokens; k++)
                    for (long r = 0; r < w[0].rows; r++)
                    {
                        double dot = 0;
                        for (int e = 0; e < cols; e++) dot += w[0].values[r * cols + e] * td[k * cols + e];
                        want[k * w[0].rows + r] = dot;
                    }
                void (*matmul)(const u8*, i64, int, int, const i8*, const XScale*, float*, int, int) =
                    t.type == T_Q4_0 ? matmul_q8_q4_0 : t.type == T_Q8_0 ? matmul_q8_q8_0 : t.type == T_Q4_K ? matmul_q8_q4_k : matmul_q8_q6_k;
                emu::launch({(unsigned)((w[0].rows + 3) / 4), (unsigned)((tokens + MATMUL_Q8_TOKENS - 1) / MATMUL_Q8_TOKENS), 1}, {128, 1, 1},
                            [&] { matmul(w[0].bytes.data(), w[0].rowBytes, (int)w[0].rows, cols, tq.data(), ts.data(), y.data(), tokens, 0); });
                check(std::string("matmul_q8_") + tag + " 3 tokens", y, want, 1e-5);
            }
        }
    // rms_norm_q8_row: two rows of 1,536 (six 256-thread slices each), normalized, and each slice quantized for the mat-vec.
    {
        const int n = 1536, rows = 2;
        const float eps = 1e-5f;
        std::vector<float> x(rows * n), w(n), y(rows * n, NAN);
        for (float& v : x) v = uni(rng);
        for (float& v : w) v = 0.5f + uni(rng);
        std::vector<i8> yq(rows * n);
        std::vector<XScale> ys(rows * n / 32);
        emu::launch({(unsigned)(n / 256), (unsigned)rows, 1}, {256, 1, 1}, [&] { rms_norm_q8_row(x.data(), w.data(), y.data(), n, eps, yq.data(), ys.data()); });
        std::vector<double> want(rows * n);
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int e = 0; e < n; e++) ss += (double)x[r * n + e] * x[r * n + e];
            double scale = 1.0 / std::sqrt(ss / n + eps);
            for (int e = 0; e < n; e++) want[r * n + e] = x[r * n + e] * scale * w[e];
        }
        check("rms_norm_q8_row 2 rows of 1536", y, want, 1e-5);
        std::vector<double> yd;
        bool exact = quantized_exactly(y, yq.data(), ys.data(), yd);
        report::exact("rms_norm_q8_row's quantized output", exact, exact ? "bit for bit" : "differs from its definition");
    }
    // swiglu_q8: y = silu(gate · x) · (up · x) over 96 rows (three groups of 32), with its quantized output for the down
    // projection (the last block of each 32-row group quantizes it).
    for (const Type& t : types)
    {
        const int rows = 96, cols = 512;
        Matrix g = random_matrix(t, rows, cols, rng), u = random_matrix(t, rows, cols, rng);
        std::vector<float> x(cols), y(rows, NAN);
        for (float& v : x) v = uni(rng);
        std::vector<i8> xq, yq(rows);
        std::vector<XScale> xs, ys(rows / 32);
        std::vector<double> xd = quantize(x, xq, xs), want(rows);
        std::vector<int> tickets(rows / 32, 0);
        for (int r = 0; r < rows; r++)
        {
            double gd = 0, ud = 0;
            for (int e = 0; e < cols; e++) { gd += g.values[r * cols + e] * xd[e]; ud += u.values[r * cols + e] * xd[e]; }
            want[r] = gd / (1.0 + std::exp(-gd)) * ud;
        }
        void (*swiglu)(const u8*, const u8*, i64, int, int, const i8*, const XScale*, float*, i8*, XScale*, int*) =
            t.type == T_Q4_0 ? swiglu_q8_q4_0 : t.type == T_Q8_0 ? swiglu_q8_q8_0 : t.type == T_Q4_K ? swiglu_q8_q4_k : swiglu_q8_q6_k;
        emu::launch({(unsigned)(rows / 4), 1, 1}, {128, 1, 1}, [&] {
            swiglu(g.bytes.data(), u.bytes.data(), g.rowBytes, rows, cols, xq.data(), xs.data(), y.data(), yq.data(), ys.data(), tickets.data()); });
        check(std::string("swiglu_q8_") + t.name + " 96 rows", y, want, 1e-5);
        std::vector<double> yd;
        bool exact = quantized_exactly(y, yq.data(), ys.data(), yd) && std::all_of(tickets.begin(), tickets.end(), [](int k) { return k == 0; });
        report::exact(std::string("swiglu_q8_") + t.name + "'s quantized output and tickets", exact, exact ? "bit for bit, tickets reset" : "differ");
    }
    // F16 weights with F32 activations (the plain types' mat-vec): rows of 700 elements, not a multiple of the chunk.
    {
        const long rows = 37;
        const int cols = 700;
        std::vector<unsigned short> wh(rows * cols);
        std::vector<float> x(cols), y(rows, NAN);
        std::vector<double> want(rows);
        for (auto& v : wh) v = to_half(uni(rng));
        for (float& v : x) v = uni(rng);
        for (long r = 0; r < rows; r++)
        {
            double dot = 0;
            for (int e = 0; e < cols; e++) dot += half_at((const unsigned char*)&wh[r * cols + e]) * x[e];
            want[r] = dot;
        }
        MatVecTargets a{};
        a.count = 1;
        a.t[0] = MatVecTarget{(const u8*)wh.data(), (i64)cols * 2, y.data(), (int)rows, 0};
        emu::launch({(unsigned)((rows + 3) / 4), 1, 1}, {128, 1, 1}, [&] { matvec_f16(a, cols, (const i8*)x.data(), nullptr); });
        check("matvec_f16 cols 700", y, want, 1e-5);
    }
    return report::summary();
}

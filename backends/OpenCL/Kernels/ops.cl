// PluginEngine OpenCL kernels (OpenCL C 1.2; no cl_khr_fp16 needed: halves are read with vload_half and
// written with vstore_half, which every OpenCL 1.x device has, NVIDIA and PoCL included).
//
// Every tensor argument is a (buffer, byte offset) pair: the host passes cl_mem handles of whole buffers and the
// kernels add the offset, so no sub-buffers (with their alignment rules) are ever created.
//
// Quantized weights are decoded in groups of 32 elements ("subs"): one Q4_0/Q8_0 block, or an eighth of a
// Q4_K/Q5_K/Q6_K super-block. Matmul kernels walk every row in whole chunks of ROW_PAD (512) elements and decode the
// padded tail unconditionally (a branch-free inner loop); the activations past the row end are masked to zero,
// but 0 * NaN is still NaN, so the weight bytes read past the last row — the slide the buffer provider declares —
// must be zero. Past any other row they are the next row's (finite) blocks.

#define WG 64
#define ROW_PAD 512
#define SUB 32

inline float ld_half(__global const uchar* p) { return vload_half(0, (__global const half*)p); }

inline void deq32_f32(__global const uchar* row, int sub, int ncols, float* out)
{
    __global const float* r = (__global const float*)row;
    int base = sub * SUB;
    for (int l = 0; l < SUB; l++) { int e = base + l; out[l] = e < ncols ? r[e] : 0.0f; }
}

inline void deq32_f16(__global const uchar* row, int sub, int ncols, float* out)
{
    __global const half* r = (__global const half*)row;
    int base = sub * SUB;
    for (int l = 0; l < SUB; l++) { int e = base + l; out[l] = e < ncols ? vload_half(e, r) : 0.0f; }
}

// BF16: the top 16 bits of an F32.
inline void deq32_bf16(__global const uchar* row, int sub, int ncols, float* out)
{
    __global const ushort* r = (__global const ushort*)row;
    int base = sub * SUB;
    for (int l = 0; l < SUB; l++) { int e = base + l; out[l] = e < ncols ? as_float((uint)r[e] << 16) : 0.0f; }
}

// Q8_0: f16 d, 32 x int8.
inline void deq32_q8_0(__global const uchar* row, int sub, int ncols, float* out)
{
    __global const uchar* b = row + (long)sub * 34;
    float d = ld_half(b);
    __global const char* q = (__global const char*)(b + 2);
    for (int l = 0; l < SUB; l++) out[l] = d * (float)q[l];
}

// Q4_0: f16 d, 16 bytes; low nibbles are elements 0..15, high nibbles 16..31, both offset by 8.
inline void deq32_q4_0(__global const uchar* row, int sub, int ncols, float* out)
{
    __global const uchar* b = row + (long)sub * 18;
    float d = ld_half(b);
    for (int j = 0; j < 16; j++)
    {
        uchar q = b[2 + j];
        out[j] = d * (float)((int)(q & 15) - 8);
        out[j + 16] = d * (float)((int)(q >> 4) - 8);
    }
}

// Q4_K super-block (144 B): f16 d, f16 dmin, 12 bytes of packed 6-bit scales/mins, 128 bytes of nibbles.
// Sub j (0..7) uses scale/min j; its nibbles are the low (even j) or high (odd j) halves of qs[32*(j/2) ..].
inline void deq32_q4_k(__global const uchar* row, int sub, int ncols, float* out)
{
    __global const uchar* b = row + (long)(sub >> 3) * 144;
    int j = sub & 7;
    float d = ld_half(b), dmin = ld_half(b + 2);
    __global const uchar* sc = b + 4;
    int s, m;
    if (j < 4) { s = sc[j] & 63; m = sc[j + 4] & 63; }
    else { s = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4); m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4); }
    float ds = d * (float)s, dm = dmin * (float)m;
    __global const uchar* qs = b + 16 + 32 * (j >> 1);
    int shift = (j & 1) * 4;
    for (int l = 0; l < SUB; l++) out[l] = ds * (float)((qs[l] >> shift) & 15) - dm;
}

// Q5_K super-block (176 B): like Q4_K (f16 d, f16 dmin, 12 bytes of scales/mins) plus qh[32] fifth bits, then qs[128].
// Sub j's fifth bit for element l is bit j of qh[l].
inline void deq32_q5_k(__global const uchar* row, int sub, int ncols, float* out)
{
    __global const uchar* b = row + (long)(sub >> 3) * 176;
    int j = sub & 7;
    float d = ld_half(b), dmin = ld_half(b + 2);
    __global const uchar* sc = b + 4;
    int s, m;
    if (j < 4) { s = sc[j] & 63; m = sc[j + 4] & 63; }
    else { s = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4); m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4); }
    float ds = d * (float)s, dm = dmin * (float)m;
    __global const uchar* qh = b + 16;
    __global const uchar* qs = b + 48 + 32 * (j >> 1);
    int shift = (j & 1) * 4;
    for (int l = 0; l < SUB; l++) out[l] = ds * (float)(((qs[l] >> shift) & 15) | (((qh[l] >> j) & 1) << 4)) - dm;
}

// Q6_K super-block (210 B): ql[128] low nibbles, qh[64] top 2 bits, int8 scales[16], f16 d.
// Element e = 128h + 32q + l (h = half, q = quadrant): low bits in ql[64h + 32(q&1) + l] (high nibble when q >= 2),
// top bits at bit 2q of qh[32h + l], scale scales[e / 16].
inline void deq32_q6_k(__global const uchar* row, int sub, int ncols, float* out)
{
    __global const uchar* b = row + (long)(sub >> 3) * 210;
    int g = sub & 7, h = g >> 2, q = g & 3;
    __global const uchar* ql = b + 64 * h + 32 * (q & 1);
    __global const uchar* qh = b + 128 + 32 * h;
    __global const char* sc = (__global const char*)(b + 192) + 8 * h + 2 * q;
    float d = ld_half(b + 208);
    int lowShift = (q >> 1) * 4, highShift = 2 * q;
    for (int l = 0; l < SUB; l++)
    {
        int v = (((ql[l] >> lowShift) & 15) | (((qh[l] >> highShift) & 3) << 4)) - 32;
        out[l] = d * (float)sc[l >> 4] * (float)v;
    }
}

// y[t, row] = sum_c x[t, c] * w[row, c]. One work-group per weight row and tile of TT tokens: each decoded group of
// 32 weights is reused for all TT tokens of the tile (TT = 1 is the matrix-vector kernel).
#define MATMUL_KERNEL(NAME, DEQ, TT)                                                                                  \
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))                                                             \
void NAME(__global const uchar* wb, ulong woff, ulong rowBytes, int ncols, int subsPerRow,                           \
          __global const uchar* xb, ulong xoff, __global uchar* yb, ulong yoff, int nrows, int tokens)               \
{                                                                                                                     \
    int row = get_group_id(0);                                                                                        \
    int t0 = get_group_id(1) * TT;                                                                                    \
    int lid = get_local_id(0);                                                                                        \
    __global const uchar* wrow = wb + woff + (ulong)row * rowBytes;                                                   \
    __global const float* x = (__global const float*)(xb + xoff);                                                     \
    __global float* y = (__global float*)(yb + yoff);                                                                 \
    int tn = min(TT, tokens - t0);                                                                                    \
    float acc[TT];                                                                                                    \
    for (int t = 0; t < TT; t++) acc[t] = 0.0f;                                                                       \
    float w[SUB];                                                                                                     \
    for (int sub = lid; sub < subsPerRow; sub += WG)                                                                  \
    {                                                                                                                 \
        DEQ(wrow, sub, ncols, w);                                                                                     \
        int base = sub * SUB;                                                                                         \
        for (int t = 0; t < tn; t++)                                                                                  \
        {                                                                                                             \
            __global const float* xr = x + (long)(t0 + t) * ncols;                                                    \
            float s = 0.0f;                                                                                           \
            for (int l = 0; l < SUB; l++) { int c = base + l; s += w[l] * (c < ncols ? xr[c] : 0.0f); }               \
            acc[t] += s;                                                                                              \
        }                                                                                                             \
    }                                                                                                                 \
    __local float part[WG * TT];                                                                                      \
    for (int t = 0; t < TT; t++) part[t * WG + lid] = acc[t];                                                         \
    barrier(CLK_LOCAL_MEM_FENCE);                                                                                     \
    for (int s = WG / 2; s > 0; s >>= 1)                                                                              \
    {                                                                                                                 \
        if (lid < s) for (int t = 0; t < TT; t++) part[t * WG + lid] += part[t * WG + lid + s];                       \
        barrier(CLK_LOCAL_MEM_FENCE);                                                                                 \
    }                                                                                                                 \
    if (lid < tn) y[(long)(t0 + lid) * nrows + row] = part[lid * WG];                                                 \
}

#define MM_TILE 8
MATMUL_KERNEL(mul_mv_f32, deq32_f32, 1)
MATMUL_KERNEL(mul_mv_f16, deq32_f16, 1)
MATMUL_KERNEL(mul_mv_bf16, deq32_bf16, 1)
MATMUL_KERNEL(mul_mv_q8_0, deq32_q8_0, 1)
MATMUL_KERNEL(mul_mv_q4_0, deq32_q4_0, 1)
MATMUL_KERNEL(mul_mv_q4_k, deq32_q4_k, 1)
MATMUL_KERNEL(mul_mv_q5_k, deq32_q5_k, 1)
MATMUL_KERNEL(mul_mv_q6_k, deq32_q6_k, 1)
MATMUL_KERNEL(mul_mm_f32, deq32_f32, MM_TILE)
MATMUL_KERNEL(mul_mm_f16, deq32_f16, MM_TILE)
MATMUL_KERNEL(mul_mm_bf16, deq32_bf16, MM_TILE)
MATMUL_KERNEL(mul_mm_q8_0, deq32_q8_0, MM_TILE)
MATMUL_KERNEL(mul_mm_q4_0, deq32_q4_0, MM_TILE)
MATMUL_KERNEL(mul_mm_q4_k, deq32_q4_k, MM_TILE)
MATMUL_KERNEL(mul_mm_q5_k, deq32_q5_k, MM_TILE)
MATMUL_KERNEL(mul_mm_q6_k, deq32_q6_k, MM_TILE)

// ---- CPU-device matmul (PoCL and other CPU OpenCL drivers) ----
// A CPU OpenCL driver runs a work-group as loops over its work-items, and a barrier splits those loops (with the
// work-items' live values spilled between them), so the GPU-shaped kernels above — a 64-item work-group per weight
// row, reduced through local memory — spend most of their time in that machinery. Here one work-item is one thread's
// unit of work, with no local memory and no barrier: it computes CPU_ROWS weight rows × all tokens, CPU_TOKENS tokens
// at a time, walking the row in 8-element slices held in float8 registers (one AVX register). Each weight slice is
// decoded once per token tile and used for CPU_TOKENS tokens; each activation slice is loaded once and used for
// CPU_ROWS rows. The few rows a work-item owns (a few KiB) stay in L1 while its token tiles go by.
// Rows are read only up to their last whole 32-element group (quantized rows end there exactly, so no slide is
// needed); a row length that is not a multiple of 32 (F32/F16/BF16 only) has its tail done element by element.

#ifndef CPU_ROWS
#define CPU_ROWS 2
#endif
#ifndef CPU_TOKENS
#define CPU_TOKENS 4
#endif

inline float hsum8(float8 v)
{
    float4 a = v.lo + v.hi;
    float2 b = a.lo + a.hi;
    return b.x + b.y;
}

// dec8_T(row, sub, j): elements 32*sub + 8*j .. +7 of a row, as floats (j = 0..3, a constant after unrolling, so
// the per-group scale arithmetic is shared by the four slices).
inline float8 dec8_f32(__global const uchar* row, int sub, int j) { return vload8(4 * sub + j, (__global const float*)row); }
inline float8 dec8_f16(__global const uchar* row, int sub, int j) { return vload_half8(4 * sub + j, (__global const half*)row); }
inline float8 dec8_bf16(__global const uchar* row, int sub, int j)
{
    return as_float8(convert_uint8(vload8(4 * sub + j, (__global const ushort*)row)) << 16);
}

inline float8 dec8_q8_0(__global const uchar* row, int sub, int j)
{
    __global const uchar* b = row + (long)sub * 34;
    return ld_half(b) * convert_float8(vload8(j, (__global const char*)(b + 2)));
}

inline float8 dec8_q4_0(__global const uchar* row, int sub, int j)
{
    __global const uchar* b = row + (long)sub * 18;
    uchar8 q = vload8(j & 1, b + 2);
    uchar8 n = j < 2 ? (q & (uchar8)15) : (q >> (uchar8)4);
    return ld_half(b) * (convert_float8(n) - 8.0f);
}

inline float2 kquant_scale_min(__global const uchar* b, int j)
{
    __global const uchar* sc = b + 4;
    int s, m;
    if (j < 4) { s = sc[j] & 63; m = sc[j + 4] & 63; }
    else { s = (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4); m = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4); }
    return (float2)(ld_half(b) * (float)s, ld_half(b + 2) * (float)m);
}

inline float8 dec8_q4_k(__global const uchar* row, int sub, int j)
{
    __global const uchar* b = row + (long)(sub >> 3) * 144;
    int g = sub & 7;
    float2 dm = kquant_scale_min(b, g);
    uchar8 q = vload8(j, b + 16 + 32 * (g >> 1));
    uchar8 n = (q >> (uchar8)((g & 1) * 4)) & (uchar8)15;
    return dm.x * convert_float8(n) - dm.y;
}

inline float8 dec8_q5_k(__global const uchar* row, int sub, int j)
{
    __global const uchar* b = row + (long)(sub >> 3) * 176;
    int g = sub & 7;
    float2 dm = kquant_scale_min(b, g);
    uchar8 q = vload8(j, b + 48 + 32 * (g >> 1));
    uchar8 h = vload8(j, b + 16);
    uchar8 n = ((q >> (uchar8)((g & 1) * 4)) & (uchar8)15) | (((h >> (uchar8)g) & (uchar8)1) << (uchar8)4);
    return dm.x * convert_float8(n) - dm.y;
}

inline float8 dec8_q6_k(__global const uchar* row, int sub, int j)
{
    __global const uchar* b = row + (long)(sub >> 3) * 210;
    int g = sub & 7, h = g >> 2, q = g & 3;
    uchar8 lo = vload8(j, b + 64 * h + 32 * (q & 1));
    uchar8 hi = vload8(j, b + 128 + 32 * h);
    float scale = ld_half(b + 208) * (float)((__global const char*)(b + 192))[8 * h + 2 * q + (j >> 1)];
    int8 v = convert_int8(((lo >> (uchar8)((q >> 1) * 4)) & (uchar8)15) | (((hi >> (uchar8)(2 * q)) & (uchar8)3) << (uchar8)4)) - 32;
    return scale * convert_float8(v);
}

// y[t, row] = sum_c x[t, c] * w[row, c]; work-item i owns rows CPU_ROWS*i .. +CPU_ROWS-1 (clamped: a partial last
// group recomputes the last row and stores only its own). TT tokens per tile; the last tile is clamped the same way.
#define MATMUL_CPU_KERNEL(NAME, DEC8, DEQ32, TT)                                                                       \
__kernel void NAME(__global const uchar* wb, ulong woff, ulong rowBytes, int ncols, int subsPerRow,                    \
                   __global const uchar* xb, ulong xoff, __global uchar* yb, ulong yoff, int nrows, int tokens)        \
{                                                                                                                      \
    int r0 = get_global_id(0) * CPU_ROWS;                                                                              \
    if (r0 >= nrows) return;                                                                                           \
    __global const uchar* w[CPU_ROWS];                                                                                 \
    _Pragma("unroll")                                                                                                  \
    for (int r = 0; r < CPU_ROWS; r++) w[r] = wb + woff + (ulong)min(r0 + r, nrows - 1) * rowBytes;                    \
    __global const float* x = (__global const float*)(xb + xoff);                                                      \
    __global float* y = (__global float*)(yb + yoff);                                                                  \
    int fullSubs = ncols / SUB, tail = ncols - fullSubs * SUB;                                                         \
    for (int t0 = 0; t0 < tokens; t0 += TT)                                                                            \
    {                                                                                                                  \
        __global const float* xt[TT];                                                                                  \
        _Pragma("unroll")                                                                                              \
        for (int t = 0; t < TT; t++) xt[t] = x + (long)min(t0 + t, tokens - 1) * ncols;                                \
        /* Every loop over rows and tokens is unrolled so acc, wv and xt live in registers, not on the stack. */       \
        float8 acc[CPU_ROWS][TT];                                                                                      \
        _Pragma("unroll")                                                                                              \
        for (int r = 0; r < CPU_ROWS; r++)                                                                             \
        {                                                                                                              \
            _Pragma("unroll")                                                                                          \
            for (int t = 0; t < TT; t++) acc[r][t] = (float8)0.0f;                                                     \
        }                                                                                                              \
        for (int sub = 0; sub < fullSubs; sub++)                                                                       \
        {                                                                                                              \
            _Pragma("unroll")                                                                                          \
            for (int j = 0; j < 4; j++)                                                                                \
            {                                                                                                          \
                float8 wv[CPU_ROWS];                                                                                   \
                _Pragma("unroll")                                                                                      \
                for (int r = 0; r < CPU_ROWS; r++) wv[r] = DEC8(w[r], sub, j);                                         \
                _Pragma("unroll")                                                                                      \
                for (int t = 0; t < TT; t++)                                                                           \
                {                                                                                                      \
                    float8 xv = vload8(4 * sub + j, xt[t]);                                                            \
                    _Pragma("unroll")                                                                                  \
                    for (int r = 0; r < CPU_ROWS; r++) acc[r][t] = fma(wv[r], xv, acc[r][t]);                          \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        float sums[CPU_ROWS][TT];                                                                                      \
        _Pragma("unroll")                                                                                              \
        for (int r = 0; r < CPU_ROWS; r++)                                                                             \
        {                                                                                                              \
            _Pragma("unroll")                                                                                          \
            for (int t = 0; t < TT; t++) sums[r][t] = hsum8(acc[r][t]);                                                \
        }                                                                                                              \
        if (tail > 0)                                                                                                  \
        {                                                                                                              \
            float wt[SUB];                                                                                             \
            for (int r = 0; r < CPU_ROWS; r++)                                                                         \
            {                                                                                                          \
                DEQ32(w[r], fullSubs, ncols, wt);                                                                      \
                for (int t = 0; t < TT; t++)                                                                           \
                    for (int l = 0; l < tail; l++) sums[r][t] += wt[l] * xt[t][fullSubs * SUB + l];                    \
            }                                                                                                          \
        }                                                                                                              \
        _Pragma("unroll")                                                                                              \
        for (int t = 0; t < TT; t++)                                                                                   \
        {                                                                                                              \
            _Pragma("unroll")                                                                                          \
            for (int r = 0; r < CPU_ROWS; r++)                                                                         \
                if (t0 + t < tokens && r0 + r < nrows) y[(long)(t0 + t) * nrows + r0 + r] = sums[r][t];                \
        }                                                                                                              \
    }                                                                                                                  \
}

MATMUL_CPU_KERNEL(mul_mv_cpu_f32, dec8_f32, deq32_f32, 1)
MATMUL_CPU_KERNEL(mul_mv_cpu_f16, dec8_f16, deq32_f16, 1)
MATMUL_CPU_KERNEL(mul_mv_cpu_bf16, dec8_bf16, deq32_bf16, 1)
MATMUL_CPU_KERNEL(mul_mv_cpu_q8_0, dec8_q8_0, deq32_q8_0, 1)
MATMUL_CPU_KERNEL(mul_mv_cpu_q4_0, dec8_q4_0, deq32_q4_0, 1)
MATMUL_CPU_KERNEL(mul_mv_cpu_q4_k, dec8_q4_k, deq32_q4_k, 1)
MATMUL_CPU_KERNEL(mul_mv_cpu_q5_k, dec8_q5_k, deq32_q5_k, 1)
MATMUL_CPU_KERNEL(mul_mv_cpu_q6_k, dec8_q6_k, deq32_q6_k, 1)
MATMUL_CPU_KERNEL(mul_mm_cpu_f32, dec8_f32, deq32_f32, CPU_TOKENS)
MATMUL_CPU_KERNEL(mul_mm_cpu_f16, dec8_f16, deq32_f16, CPU_TOKENS)
MATMUL_CPU_KERNEL(mul_mm_cpu_bf16, dec8_bf16, deq32_bf16, CPU_TOKENS)
MATMUL_CPU_KERNEL(mul_mm_cpu_q8_0, dec8_q8_0, deq32_q8_0, CPU_TOKENS)
MATMUL_CPU_KERNEL(mul_mm_cpu_q4_0, dec8_q4_0, deq32_q4_0, CPU_TOKENS)
MATMUL_CPU_KERNEL(mul_mm_cpu_q4_k, dec8_q4_k, deq32_q4_k, CPU_TOKENS)
MATMUL_CPU_KERNEL(mul_mm_cpu_q5_k, dec8_q5_k, deq32_q5_k, CPU_TOKENS)
MATMUL_CPU_KERNEL(mul_mm_cpu_q6_k, dec8_q6_k, deq32_q6_k, CPU_TOKENS)

// dst[:] = dequantize(table[row, :]); one work-item per group of 32 elements, never reading past the row.
#define GET_ROWS_KERNEL(NAME, DEQ)                                                                                    \
__kernel void NAME(__global const uchar* tb, ulong toff, ulong rowBytes, int row, int ncols,                          \
                   __global uchar* db, ulong doff)                                                                    \
{                                                                                                                     \
    int sub = get_global_id(0);                                                                                       \
    float w[SUB];                                                                                                     \
    DEQ(tb + toff + (ulong)row * rowBytes, sub, ncols, w);                                                            \
    __global float* dst = (__global float*)(db + doff);                                                               \
    int base = sub * SUB;                                                                                             \
    for (int l = 0; l < SUB; l++) if (base + l < ncols) dst[base + l] = w[l];                                         \
}

GET_ROWS_KERNEL(get_rows_f32, deq32_f32)
GET_ROWS_KERNEL(get_rows_f16, deq32_f16)
GET_ROWS_KERNEL(get_rows_bf16, deq32_bf16)
GET_ROWS_KERNEL(get_rows_q8_0, deq32_q8_0)
GET_ROWS_KERNEL(get_rows_q4_0, deq32_q4_0)
GET_ROWS_KERNEL(get_rows_q4_k, deq32_q4_k)
GET_ROWS_KERNEL(get_rows_q5_k, deq32_q5_k)
GET_ROWS_KERNEL(get_rows_q6_k, deq32_q6_k)

inline float wg_sum(__local float* red, float v)
{
    int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG / 2; s > 0; s >>= 1)
    {
        if (lid < s) red[lid] += red[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

inline float wg_max(__local float* red, float v)
{
    int lid = get_local_id(0);
    red[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = WG / 2; s > 0; s >>= 1)
    {
        if (lid < s) red[lid] = fmax(red[lid], red[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

// One work-group per row.
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void rms_norm(__global const uchar* xb, ulong xoff, __global const uchar* wb, ulong woff, __global uchar* yb, ulong yoff,
              int n, float eps)
{
    int row = get_group_id(0), lid = get_local_id(0);
    __global const float* x = (__global const float*)(xb + xoff) + (long)row * n;
    __global const float* w = (__global const float*)(wb + woff);
    __global float* y = (__global float*)(yb + yoff) + (long)row * n;
    __local float red[WG];
    float s = 0.0f;
    for (int i = lid; i < n; i += WG) s += x[i] * x[i];
    float scale = rsqrt(wg_sum(red, s) / (float)n + eps);
    for (int i = lid; i < n; i += WG) y[i] = x[i] * scale * w[i];
}

// Rotates pair i of one head by pos * freq_i / factor. freq holds freqScale * freqBase^(-2i/dims) as a float pair (hi, lo)
// computed in double on the host; the angle pos * freq is carried as hi + lo (fma recovers the product's rounding error), so
// long positions keep their phase like the CPU's double-precision angles instead of losing ~pos * 2^-24 radians. Dividing
// by the factor keeps that: q = hi / factor, and fma(-q, factor, hi) is the quotient's exact remainder, folded into lo.
// factor == 1 leaves (hi, lo) bit for bit as they were, so plain rope is unchanged.
inline void rope_pair(__global float* x, float2 f, float factor, int position, int i, int dims, int neox)
{
    float p = (float)position;
    float hi = p * f.x;
    float lo = fma(p, f.x, -hi) + p * f.y;
    float q = hi / factor;
    lo = (fma(-q, factor, hi) + lo) / factor;
    hi = q;
    float c, s = sincos(hi, &c);
    float sr = s + lo * c, cr = c - lo * s;
    int a = neox ? i : 2 * i;
    int b = neox ? i + dims / 2 : 2 * i + 1;
    float x0 = x[a], x1 = x[b];
    x[a] = x0 * cr - x1 * sr;
    x[b] = x1 * cr + x0 * sr;
}

// Global size (dims/2, heads, tokens). Normal pairs (2i, 2i+1); NeoX pairs (i, i + dims/2).
__kernel void rope(__global uchar* xb, ulong xoff, __global const float2* freqs, int heads, int headSize, int dims,
                   int firstPosition, int neox)
{
    int i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    __global float* x = (__global float*)(xb + xoff) + ((long)t * heads + h) * headSize;
    rope_pair(x, freqs[i], 1.0f, firstPosition + t, i, dims, neox);
}

// As rope, with pair i's angle divided by factors[i] (F32 [dims/2]: a model's rope_freqs.weight, Llama 3.1-style scaling).
__kernel void rope_factors(__global uchar* xb, ulong xoff, __global const float2* freqs, int heads, int headSize, int dims,
                           int firstPosition, int neox, __global const uchar* factorsb, ulong factorsoff)
{
    int i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    __global float* x = (__global float*)(xb + xoff) + ((long)t * heads + h) * headSize;
    __global const float* factors = (__global const float*)(factorsb + factorsoff);
    rope_pair(x, freqs[i], factors[i], firstPosition + t, i, dims, neox);
}

// One work-group per (head, token). Scores go to a scratch row of maxVisible floats per (token, head).
#define ATTENTION_KERNEL(NAME, CACHE_T, LOAD)                                                                         \
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))                                                             \
void NAME(__global const uchar* qb, ulong qoff, __global const uchar* kb, ulong koff, __global const uchar* vb,        \
          ulong voff, __global uchar* ob, ulong ooff, __global float* scratch, int heads, int kvHeads, int headSize,  \
          int firstPosition, int maxVisible, float scale)                                                             \
{                                                                                                                     \
    int h = get_group_id(0), t = get_group_id(1), lid = get_local_id(0);                                              \
    int visible = firstPosition + t + 1;                                                                              \
    int g = h / (heads / kvHeads);                                                                                    \
    long kvStride = (long)kvHeads * headSize;                                                                         \
    __global const float* q = (__global const float*)(qb + qoff) + ((long)t * heads + h) * headSize;                  \
    __global const CACHE_T* k = (__global const CACHE_T*)(kb + koff) + (long)g * headSize;                            \
    __global const CACHE_T* v = (__global const CACHE_T*)(vb + voff) + (long)g * headSize;                            \
    __global float* o = (__global float*)(ob + ooff) + ((long)t * heads + h) * headSize;                              \
    __global float* scores = scratch + ((long)t * heads + h) * maxVisible;                                            \
    __local float red[WG];                                                                                            \
    float m = -INFINITY;                                                                                              \
    for (int j = lid; j < visible; j += WG)                                                                           \
    {                                                                                                                 \
        float s = 0.0f;                                                                                               \
        for (int d = 0; d < headSize; d++) s += q[d] * LOAD(k, j * kvStride + d);                                     \
        s *= scale;                                                                                                   \
        scores[j] = s;                                                                                                \
        m = fmax(m, s);                                                                                               \
    }                                                                                                                 \
    m = wg_max(red, m);                                                                                               \
    float sum = 0.0f;                                                                                                 \
    for (int j = lid; j < visible; j += WG) { float e = exp(scores[j] - m); scores[j] = e; sum += e; }                \
    sum = wg_sum(red, sum);                                                                                           \
    barrier(CLK_GLOBAL_MEM_FENCE);                                                                                    \
    float inv = 1.0f / sum;                                                                                           \
    for (int d = lid; d < headSize; d += WG)                                                                          \
    {                                                                                                                 \
        float acc = 0.0f;                                                                                             \
        for (int j = 0; j < visible; j++) acc += scores[j] * LOAD(v, j * kvStride + d);                               \
        o[d] = acc * inv;                                                                                             \
    }                                                                                                                 \
}

#define LOAD_F32(p, i) ((p)[i])
#define LOAD_F16(p, i) vload_half((i), (p))
ATTENTION_KERNEL(attention_f32, float, LOAD_F32)
ATTENTION_KERNEL(attention_f16, half, LOAD_F16)

// CPU-device attention: one work-item per (head, token) with no barrier (see the CPU matmul above for why), the
// head's dimensions walked in float8 slices; headSize must be a multiple of 8 (the host falls back to the work-group
// kernel otherwise). Scores use the same scratch rows as the work-group kernel.
#define ATTENTION_CPU_KERNEL(NAME, CACHE_T, LOAD8)                                                                    \
__kernel void NAME(__global const uchar* qb, ulong qoff, __global const uchar* kb, ulong koff, __global const uchar* vb,\
          ulong voff, __global uchar* ob, ulong ooff, __global float* scratch, int heads, int kvHeads, int headSize,  \
          int firstPosition, int maxVisible, float scale)                                                             \
{                                                                                                                     \
    int h = get_global_id(0), t = get_global_id(1);                                                                   \
    int visible = firstPosition + t + 1;                                                                              \
    int g = h / (heads / kvHeads);                                                                                    \
    long kvStride = (long)kvHeads * headSize;                                                                         \
    int slices = headSize / 8;                                                                                        \
    __global const float* q = (__global const float*)(qb + qoff) + ((long)t * heads + h) * headSize;                  \
    __global const CACHE_T* k = (__global const CACHE_T*)(kb + koff) + (long)g * headSize;                            \
    __global const CACHE_T* v = (__global const CACHE_T*)(vb + voff) + (long)g * headSize;                            \
    __global float* o = (__global float*)(ob + ooff) + ((long)t * heads + h) * headSize;                              \
    __global float* scores = scratch + ((long)t * heads + h) * maxVisible;                                            \
    float m = -INFINITY;                                                                                              \
    for (int j = 0; j < visible; j++)                                                                                 \
    {                                                                                                                 \
        __global const CACHE_T* kj = k + j * kvStride;                                                                \
        float8 s8 = (float8)0.0f;                                                                                     \
        for (int d = 0; d < slices; d++) s8 = fma(vload8(d, q), LOAD8(d, kj), s8);                                    \
        float s = hsum8(s8) * scale;                                                                                  \
        scores[j] = s;                                                                                                \
        m = fmax(m, s);                                                                                               \
    }                                                                                                                 \
    float sum = 0.0f;                                                                                                 \
    for (int j = 0; j < visible; j++) { float e = exp(scores[j] - m); scores[j] = e; sum += e; }                      \
    float inv = 1.0f / sum;                                                                                           \
    for (int d = 0; d < slices; d++)                                                                                  \
    {                                                                                                                 \
        float8 acc = (float8)0.0f;                                                                                    \
        for (int j = 0; j < visible; j++) acc = fma((float8)scores[j], LOAD8(d, v + j * kvStride), acc);              \
        vstore8(acc * inv, d, o);                                                                                     \
    }                                                                                                                 \
}

#define LOAD8_F32(i, p) vload8((i), (p))
#define LOAD8_F16(i, p) vload_half8((i), (p))
ATTENTION_CPU_KERNEL(attention_cpu_f32, float, LOAD8_F32)
ATTENTION_CPU_KERNEL(attention_cpu_f16, half, LOAD8_F16)

__kernel void silu_mul(__global const uchar* gb, ulong goff, __global const uchar* ub, ulong uoff,
                       __global uchar* yb, ulong yoff, long n)
{
    long i = get_global_id(0);
    if (i >= n) return;
    float g = ((__global const float*)(gb + goff))[i];
    float u = ((__global const float*)(ub + uoff))[i];
    ((__global float*)(yb + yoff))[i] = g / (1.0f + exp(-g)) * u;
}

__kernel void add(__global const uchar* ab, ulong aoff, __global const uchar* bb, ulong boff,
                  __global uchar* yb, ulong yoff, long n)
{
    long i = get_global_id(0);
    if (i >= n) return;
    ((__global float*)(yb + yoff))[i] = ((__global const float*)(ab + aoff))[i] + ((__global const float*)(bb + boff))[i];
}

__kernel void add_bias(__global uchar* xb, ulong xoff, __global const uchar* bb, ulong boff, int n, long total)
{
    long i = get_global_id(0);
    if (i >= total) return;
    ((__global float*)(xb + xoff))[i] += ((__global const float*)(bb + boff))[i % n];
}

// Round-to-nearest-even, as the CPU reference converts.
__kernel void convert_f16(__global const uchar* sb, ulong soff, __global uchar* db, ulong doff, long n)
{
    long i = get_global_id(0);
    if (i >= n) return;
    vstore_half_rte(((__global const float*)(sb + soff))[i], i, (__global half*)(db + doff));
}

// PluginEngine GPU kernels, compiled at run time for the device's architecture by NVRTC (CUDA) or hiprtc (HIP).
// One source for both: what the vendors spell differently (lane shuffles, half conversions, the int8 dot product,
// programmatic launch) comes from gpu_portability.h, which the host puts in front of this file (KernelSource).
// Block layouts are GGUF's (see abstractions/Types/GgmlType.cs); ROW_CHUNK is why quantized tensors carry a
// "slide": the mat-vec kernels read every row in whole chunks of ROW_CHUNK elements, so the last row of a
// matrix whose row length is not a multiple of ROW_CHUNK is read past its end, into bytes that must be zero.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

#ifndef ROW_CHUNK
#error "ROW_CHUNK must be defined by the host (elements a warp reads per step: 32 lanes x 16)"
#endif
#ifndef MATMUL_TOKENS_PER_BLOCK
#error "MATMUL_TOKENS_PER_BLOCK must be defined by the host"
#endif
#ifndef ATTENTION_MAX_HEAD
#error "ATTENTION_MAX_HEAD must be defined by the host"
#endif
#ifndef ATTENTION_WARPS
#error "ATTENTION_WARPS must be defined by the host"
#endif
#define LANE_ELEMS 16
#define ATT_PER_LANE (ATTENTION_MAX_HEAD / 32)
#define PRAGMA(x) _Pragma(#x)
#define UNROLL(n) PRAGMA(unroll n)

// ggml type ids (template arguments)
#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
#define T_BF16 30

__device__ __forceinline__ float bf2f(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ float ldh(const u8* p) { return h2f(*(const u16*)p); }
// Two floats as f16 in one word, lo in the low half (the order f16 pairs have in memory).
__device__ __forceinline__ u32 pack_h2(float lo, float hi) { return (u32)f2h(lo) | ((u32)f2h(hi) << 16); }

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += lane_xor(v, o);
    return v;
}

// 8-bit activation blocks of the decode mat-vec (see quantize_x_q8): d = max|x| / 127 over 32 elements, s = d * sum(q).
struct XScale { float d, s; };

// Quantizes v (element `lane` of one 32-element block) into q[lane] and, from lane 0, the block's XScale.
// The whole warp must call it (warp shuffles).
__device__ __forceinline__ void quantize_block32(float v, int lane, signed char* q, XScale* scale)
{
    float amax = fabsf(v);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, lane_xor(amax, o));
    float d = amax / 127.f;
    int qi = amax == 0.f ? 0 : __float2int_rn(v / d);
    q[lane] = (signed char)qi;
    int sum = qi;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += lane_xor(sum, o);
    if (lane == 0) { XScale x; x.d = d; x.s = d * (float)sum; *scale = x; }
}

// K-quant 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, float* sc, float* m)
{
    if (j < 4) { *sc = (float)(q[j] & 63); *m = (float)(q[j + 4] & 63); }
    else
    {
        *sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// scale_min_k4 from the 12 scale bytes held as three little-endian words (s0: bytes 0-3, s1: 4-7, s2: 8-11).
__device__ __forceinline__ void scale_min_k4_words(int j, u32 s0, u32 s1, u32 s2, float* sc, float* m)
{
    int sh = (j & 3) * 8;
    u32 a = (s0 >> sh) & 0xFFu, b = (s1 >> sh) & 0xFFu, c = (s2 >> sh) & 0xFFu;
    if (j < 4) { *sc = (float)(a & 63); *m = (float)(b & 63); }
    else { *sc = (float)((c & 0xF) | ((a >> 6) << 4)); *m = (float)((c >> 4) | ((b >> 6) << 4)); }
}

// 16 bytes at p into four little-endian words, with the widest loads p's alignment allows: weight blocks are
// only byte- or 2-byte-aligned in general (Q8_0 blocks are 34 bytes, Q6_K 210), K-quant nibbles often 16-byte aligned.
struct alignas(16) U32x4 { u32 x, y, z, w; };
__device__ __forceinline__ void load16(const u8* p, u32* w)
{
    unsigned long long a = (unsigned long long)p;
    if ((a & 15) == 0) { U32x4 v = *(const U32x4*)p; w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w; }
    else if ((a & 3) == 0) { const u32* q = (const u32*)p; w[0] = q[0]; w[1] = q[1]; w[2] = q[2]; w[3] = q[3]; }
    else if ((a & 1) == 0)
    {
        const u16* q = (const u16*)p;
#pragma unroll
        for (int k = 0; k < 4; k++) w[k] = (u32)q[2 * k] | ((u32)q[2 * k + 1] << 16);
    }
    else
    {
#pragma unroll
        for (int k = 0; k < 4; k++) w[k] = (u32)p[4 * k] | ((u32)p[4 * k + 1] << 8) | ((u32)p[4 * k + 2] << 16) | ((u32)p[4 * k + 3] << 24);
    }
}
#define BYTE(w, i) ((w[(i) >> 2] >> (((i) & 3) * 8)) & 0xFFu)

// 4*N bytes at a 2-byte-aligned p as N words, read as N+1 aligned words and funnel-shifted: the same instructions on
// every lane whatever its own alignment (load16's per-address branch splits a warp whose lanes read 18- or 34-byte
// blocks). The extra word is read only when p is not 4-aligned, so nothing outside the words that hold p's bytes is touched.
// The loads (load) and the shifts (words) are apart so that a decode mat-vec can issue the loads before it waits for its
// predecessor and shift after (MATVEC_PRELOAD); load_a2 does both.
template <int N>
struct A2Words
{
    u32 x[N + 1], sh;
    __device__ __forceinline__ void load(const u8* p)
    {
        const u32* a = (const u32*)((unsigned long long)p & ~3ull);
        sh = ((u32)(unsigned long long)p & 2u) * 8u; // 0 or 16
#pragma unroll
        for (int i = 0; i < N; i++) x[i] = a[i];
        x[N] = sh ? a[N] : 0u;
    }
    __device__ __forceinline__ void words(u32* w) const
    {
#pragma unroll
        for (int i = 0; i < N; i++) w[i] = __funnelshift_r(x[i], x[i + 1], sh);
    }
};
template <int N>
__device__ __forceinline__ void load_a2(const u8* p, u32* w)
{
    A2Words<N> a;
    a.load(p);
    a.words(w);
}

// A block that starts with an f16 scale and then N words of quants (Q4_0: N = 4, 18 bytes; Q8_0: N = 8, 34 bytes), at a
// 2-byte-aligned b: N + 1 aligned words hold all of it (each of them holds at least one of the block's bytes), then
// the scale and the quants are shifted out. Uniform across lanes, as load_a2; loads and shifts apart as A2Words.
template <int N>
struct ScaledBlockWords
{
    u32 x[N + 1], sh;
    __device__ __forceinline__ void load(const u8* b)
    {
        const u32* a = (const u32*)((unsigned long long)b & ~3ull);
        sh = ((u32)(unsigned long long)b & 2u) * 8u; // 0 or 16
#pragma unroll
        for (int i = 0; i <= N; i++) x[i] = a[i];
    }
    __device__ __forceinline__ float quants(u32* q) const // returns the scale
    {
#pragma unroll
        for (int i = 0; i < N; i++) q[i] = __funnelshift_rc(x[i], x[i + 1], 16u + sh); // shift 32 (clamped) = the next word
        return h2f((u16)(x[0] >> sh));
    }
};
template <int N>
__device__ __forceinline__ float load_scaled_block(const u8* b, u32* q)
{
    ScaledBlockWords<N> w;
    w.load(b);
    return w.quants(q);
}

// Dequantizes the 16 elements e0 .. e0+15 of a row (e0 a multiple of 16). Quantized types read whole blocks
// without looking at the row length (rows are whole blocks; past the last row lies the zeroed slide);
// plain types have no slide, so elements at or past `cols` read as 0.
template <int T>
__device__ __forceinline__ void deq16(const u8* row, int e0, int cols, float* v)
{
    if (T == T_F32 || T == T_F16 || T == T_BF16)
    {
        if (e0 + 16 <= cols)
        {
            const int esize = T == T_F32 ? 4 : 2;
            u32 w[4 * esize];
#pragma unroll
            for (int k = 0; k < esize; k++) load16(row + (i64)e0 * esize + 16 * k, w + 4 * k);
#pragma unroll
            for (int i = 0; i < 16; i++)
            {
                if (T == T_F32) v[i] = __uint_as_float(w[i]);
                else
                {
                    u16 h = (u16)(w[i >> 1] >> ((i & 1) * 16));
                    v[i] = T == T_F16 ? h2f(h) : bf2f(h);
                }
            }
            return;
        }
#pragma unroll
        for (int i = 0; i < 16; i++)
        {
            int e = e0 + i;
            float x = 0.f;
            if (e < cols)
            {
                if (T == T_F32) x = ((const float*)row)[e];
                else if (T == T_F16) x = h2f(((const u16*)row)[e]);
                else x = bf2f(((const u16*)row)[e]);
            }
            v[i] = x;
        }
    }
    else if (T == T_Q8_0)
    {
        const u8* b = row + (i64)(e0 >> 5) * 34;
        float d = ldh(b);
        u32 w[4];
        load16(b + 2 + (e0 & 31), w);
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = d * (float)(i8)BYTE(w, i);
    }
    else if (T == T_Q4_0)
    {
        const u8* b = row + (i64)(e0 >> 5) * 18;
        float d = ldh(b);
        u32 w[4];
        load16(b + 2, w);
        int shift = (e0 & 31) >= 16 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = d * (float)((int)((BYTE(w, i) >> shift) & 15) - 8);
    }
    else if (T == T_Q4_K || T == T_Q5_K)
    {
        const int bytes = T == T_Q4_K ? 144 : 176;
        const u8* b = row + (i64)(e0 >> 8) * bytes;
        float d = ldh(b), dmin = ldh(b + 2);
        int e = e0 & 255, j = e >> 6, hi = (e >> 5) & 1, l0 = e & 31;
        float sc, m;
        scale_min_k4(2 * j + hi, b + 4, &sc, &m);
        float d1 = d * sc, m1 = dmin * m;
        int shift = hi ? 4 : 0;
        u32 q[4];
        if (T == T_Q4_K)
        {
            load16(b + 16 + 32 * j + l0, q);
#pragma unroll
            for (int i = 0; i < 16; i++) v[i] = d1 * (float)((BYTE(q, i) >> shift) & 15) - m1;
        }
        else
        {
            u32 qh[4];
            load16(b + 16 + l0, qh);
            load16(b + 48 + 32 * j + l0, q);
            int bit = (hi ? 2 : 1) << (2 * j);
#pragma unroll
            for (int i = 0; i < 16; i++)
                v[i] = d1 * (float)(((BYTE(q, i) >> shift) & 15) + ((BYTE(qh, i) & bit) ? 16 : 0)) - m1;
        }
    }
    else if (T == T_Q6_K)
    {
        const u8* b = row + (i64)(e0 >> 8) * 210;
        int e = e0 & 255, h = e >> 7, r = e & 127, g = r >> 5, l0 = r & 31;
        u32 ql[4], qh[4];
        load16(b + h * 64 + (g & 1) * 32 + l0, ql);
        load16(b + 128 + h * 32 + l0, qh);
        float s = ldh(b + 208) * (float)((const i8*)(b + 192))[h * 8 + (l0 >> 4) + 2 * g];
        int shift = g >= 2 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 16; i++)
        {
            int q = (int)(((BYTE(ql, i) >> shift) & 15) | (((BYTE(qh, i) >> (2 * g)) & 3) << 4)) - 32;
            v[i] = s * (float)q;
        }
    }
}

// x[e0 .. e0+15] of one activation row, zero past `cols`; 16-byte loads when the whole group is in the row and aligned.
struct alignas(16) F32x4 { float x, y, z, w; };
__device__ __forceinline__ void load_x16(const float* xt, int e0, int cols, float* xv)
{
    const float* p = xt + e0;
    if (e0 + 16 <= cols && (((unsigned long long)p) & 15) == 0)
    {
#pragma unroll
        for (int k = 0; k < 4; k++)
        {
            F32x4 f = ((const F32x4*)p)[k];
            xv[4 * k] = f.x; xv[4 * k + 1] = f.y; xv[4 * k + 2] = f.z; xv[4 * k + 3] = f.w;
        }
    }
    else
    {
#pragma unroll
        for (int i = 0; i < 16; i++) xv[i] = e0 + i < cols ? p[i] : 0.f;
    }
}

// y[t, r] = sum_c w[r, c] * x[t, c]. One warp per weight row; each step the warp reads one ROW_CHUNK-element
// chunk of the row (16 consecutive elements per lane) and applies it to NT tokens, so the weights are read
// once per NT tokens. NT = 1 is the bandwidth-bound decode path (F16/F32/BF16 weights), where MATMUL_T1_UNROLL chunks are
// unrolled so that their loads are in flight together (docs/gpu-kernels.md#f16-decode).
#ifndef MATMUL_T1_UNROLL
#define MATMUL_T1_UNROLL 1
#endif
template <int T, int NT>
__device__ __forceinline__ void matmul_rows(const u8* w, i64 rowBytes, i64 rows, int cols, const float* x, float* y, int tokens)
{
    int lane = threadIdx.x & 31;
    i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    int t0 = blockIdx.y * NT;
    const u8* row = w + r * rowBytes;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.f;
    PRAGMA(unroll (NT == 1 ? MATMUL_T1_UNROLL : 1))
    for (int c0 = 0; c0 < cols; c0 += ROW_CHUNK)
    {
        int e0 = c0 + lane * LANE_ELEMS;
        float v[16];
        deq16<T>(row, e0, cols, v);
#pragma unroll
        for (int t = 0; t < NT; t++)
        {
            if (t0 + t >= tokens) break;
            float xv[16];
            load_x16(x + (i64)(t0 + t) * cols, e0, cols, xv);
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < 16; i++) s += v[i] * xv[i];
            acc[t] += s;
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++)
    {
        float s = warp_sum(acc[t]);
        if (lane == 0 && t0 + t < tokens) y[(i64)(t0 + t) * rows + r] = s;
    }
}

// dst[i, :] = dequantize(table[ids[i], :]); grid (ids, ceil(rowLength / (blockDim * 16))).
template <int T>
__device__ __forceinline__ void get_rows(const u8* table, i64 rowBytes, const int* ids, float* dst, i64 rowLength)
{
    i64 e0 = ((i64)blockIdx.y * blockDim.x + threadIdx.x) * LANE_ELEMS;
    if (e0 >= rowLength) return;
    const u8* row = table + (i64)ids[blockIdx.x] * rowBytes;
    float v[16];
    deq16<T>(row, (int)e0, (int)rowLength, v);
    float* out = dst + (i64)blockIdx.x * rowLength + e0;
#pragma unroll
    for (int i = 0; i < 16; i++) if (e0 + i < rowLength) out[i] = v[i];
}

#define WEIGHT_KERNELS(name, T)                                                                                        \
    extern "C" __global__ void matmul_##name##_t1(const u8* w, i64 rowBytes, i64 rows, int cols, const float* x, float* y, int tokens) \
    { PDL_ENTRY(); matmul_rows<T, 1>(w, rowBytes, rows, cols, x, y, tokens); }                                                      \
    extern "C" __global__ void matmul_##name##_tn(const u8* w, i64 rowBytes, i64 rows, int cols, const float* x, float* y, int tokens) \
    { PDL_ENTRY(); matmul_rows<T, MATMUL_TOKENS_PER_BLOCK>(w, rowBytes, rows, cols, x, y, tokens); }                                \
    extern "C" __global__ void get_rows_##name(const u8* table, i64 rowBytes, const int* ids, float* dst, i64 rowLength) \
    { PDL_ENTRY(); get_rows<T>(table, rowBytes, ids, dst, rowLength); }

WEIGHT_KERNELS(f32, T_F32)
WEIGHT_KERNELS(f16, T_F16)
WEIGHT_KERNELS(bf16, T_BF16)
WEIGHT_KERNELS(q8_0, T_Q8_0)
WEIGHT_KERNELS(q4_0, T_Q4_0)
WEIGHT_KERNELS(q4_k, T_Q4_K)
WEIGHT_KERNELS(q5_k, T_Q5_K)
WEIGHT_KERNELS(q6_k, T_Q6_K)

// Elements of a row one rms_norm thread keeps in registers (rows up to NORM_REGS x blockDim, 8192 with 1024 threads).
#define NORM_REGS 8

// --- Decode prefetch (docs/gpu-kernels.md#decode-prefetch) -----------------------------------------------------------
// PDL_EARLY_TRIGGER=1 (default): the small kernels a decode mat-vec follows (norms, quantization, rope/cache store,
// decode attention, elementwise) let the stream's next kernel be scheduled as soon as they start (PDL_SMALL_ENTRY), not
// when they end, so its blocks are resident and waiting on the GPU when the small kernel finishes. 0: at their end.
// ATTENTION_PREFETCH_STEPS=n (default 1): inside the attention's loop each warp asks L2 for the K and V rows it reads n
// steps later (attend), so the next step's loads do not start cold when this step's arithmetic ends. 0: none.
// Both are hints: what is read and computed, and in which order, is unchanged.
#ifndef PDL_EARLY_TRIGGER
#define PDL_EARLY_TRIGGER 1
#endif
#ifndef ATTENTION_PREFETCH_STEPS
#define ATTENTION_PREFETCH_STEPS 1
#endif
#if PDL_EARLY_TRIGGER
#define PDL_SMALL_ENTRY() do { PDL_TRIGGER(); PDL_ENTRY(); } while (0)
#else
#define PDL_SMALL_ENTRY() PDL_ENTRY()
#endif

// y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w; one block per row (a decode row that the int8 mat-vec reads
// next goes to rms_norm_q8_row instead). Rows up to NORM_REGS x blockDim stay in registers, every x and w load issued
// before the first reduction: thread t holds elements k * blockDim + t (k < NORM_REGS). When xq is not null (n a
// multiple of 32, blockDim of 32: each warp holds whole 32-element blocks), y is also quantized to 8-bit blocks, row r at
// xq + r * n, for the int8 batch matmul that reads it next (several sequences decoding together; docs/batching.md).
// When yh is not null, y is also written as f16 at yh: a prompt's input to the cuBLAS GEMM (docs/gpu-kernels.md#prompt-gemm-inputs).
extern "C" __global__ void rms_norm(const float* x, const float* w, float* y, int n, float eps, i8* xq, XScale* xs, u16* yh)
{
    PDL_SMALL_ENTRY();
    __shared__ float partial[32];
    const float* xr = x + (i64)blockIdx.x * n;
    float* yr = y + (i64)blockIdx.x * n;
    int tid = threadIdx.x;
    bool inRegs = n <= NORM_REGS * (int)blockDim.x;
    float xv[NORM_REGS], wv[NORM_REGS];
    float s = 0.f;
    if (inRegs)
    {
#pragma unroll
        for (int k = 0; k < NORM_REGS; k++)
        {
            int i = k * blockDim.x + tid;
            xv[k] = i < n ? xr[i] : 0.f;
            wv[k] = i < n ? w[i] : 0.f;
        }
#pragma unroll
        for (int k = 0; k < NORM_REGS; k++) s += xv[k] * xv[k];
    }
    else
        for (int i = tid; i < n; i += blockDim.x) s += xr[i] * xr[i];
    s = warp_sum(s);
    if ((tid & 31) == 0) partial[tid >> 5] = s;
    __syncthreads();
    if (tid < 32)
    {
        float p = tid < (blockDim.x >> 5) ? partial[tid] : 0.f;
        p = warp_sum(p);
        if (tid == 0) partial[0] = p;
    }
    __syncthreads();
    float scale = rsqrtf(partial[0] / (float)n + eps);
    i64 q0 = (i64)blockIdx.x * n;
    if (inRegs)
    {
#pragma unroll
        for (int k = 0; k < NORM_REGS; k++)
        {
            int i = k * blockDim.x + tid;
            if (i >= n) continue; // whole warps when quantizing
            float v = xv[k] * scale * wv[k];
            yr[i] = v;
            if (yh != 0) yh[q0 + i] = f2h(v);
            if (xq != 0) quantize_block32(v, tid & 31, xq + q0 + i - (tid & 31), xs + ((q0 + i) >> 5));
        }
    }
    else
        for (int i = tid; i < n; i += blockDim.x)
        {
            float v = xr[i] * scale * w[i];
            yr[i] = v;
            if (yh != 0) yh[q0 + i] = f2h(v);
            if (xq != 0) quantize_block32(v, tid & 31, xq + q0 + i - (tid & 31), xs + ((q0 + i) >> 5));
        }
}

// A decode row (or each row of a small batch: grid y) normalized and quantized by n / blockDim blocks instead of one: a
// single block is issue-bound on its SM (an H200 spent 6 us on 4096 elements). Every block sums the squares of the whole
// row (16 KB from L2 for n = 4096, 16-byte loads), then writes and quantizes its own slice; n is a multiple of 32 (and of 4)
// and blockDim of 32.
extern "C" __global__ void rms_norm_q8_row(const float* x, const float* w, float* y, int n, float eps, i8* xq, XScale* xs)
{
    PDL_SMALL_ENTRY();
    __shared__ float partial[32];
    i64 row = (i64)blockIdx.y * n;
    x += row; y += row; xq += row; xs += row >> 5;
    int tid = threadIdx.x, lane = tid & 31;
    float s = 0.f;
    for (int i = 4 * tid; i < n; i += 4 * blockDim.x)
    {
        F32x4 v = *(const F32x4*)(x + i);
        s += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    s = warp_sum(s);
    if (lane == 0) partial[tid >> 5] = s;
    __syncthreads();
    float total = 0.f;
    for (int k = 0; k < (int)(blockDim.x >> 5); k++) total += partial[k]; // the same order in every block
    float scale = rsqrtf(total / (float)n + eps);
    int e = blockIdx.x * blockDim.x + tid;
    if (e - lane >= n) return; // whole warps in or out
    float v = x[e] * scale * w[e];
    y[e] = v;
    quantize_block32(v, lane, xq + (e - lane), xs + (e >> 5));
}

// Angle of rotated pair i (0 .. dims/2 - 1) at `position`. Double precision so long positions keep their phase (the
// CPU reference does the same). `factors` (F32 [dims/2], a model's rope_freqs.weight for Llama 3.1-style scaling)
// divides pair i's angle by factors[i]; null when the model has none.
__device__ __forceinline__ void rope_cos_sin(int position, int i, int dims, float freqBase, float freqScale, const float* factors, float* c, float* s)
{
    double theta = (double)position * (double)freqScale * exp(-2.0 * i / dims * log((double)freqBase));
    if (factors) theta /= (double)factors[i];
    double sn, cs;
    sincos(theta, &sn, &cs);
    *c = (float)cs;
    *s = (float)sn;
}

// Element indices of rotated pair i in a head: (2i, 2i+1) normally, (i, i + dims/2) in NeoX mode.
__device__ __forceinline__ void rope_pair(int i, int dims, int neox, int* a, int* b)
{
    *a = neox ? i : 2 * i;
    *b = neox ? i + (dims >> 1) : 2 * i + 1;
}

// In-place rotary embedding of x [tokens, heads, headSize]; one thread per rotated pair.
extern "C" __global__ void rope(float* x, int tokens, int heads, int headSize, int dims, int firstPosition, float freqBase, float freqScale, int neox,
                                const float* factors)
{
    PDL_ENTRY();
    int half = dims >> 1;
    i64 total = (i64)tokens * heads * half;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (i64)gridDim.x * blockDim.x)
    {
        int i = (int)(idx % half);
        i64 th = idx / half; // token * heads + head
        int t = (int)(th / heads);
        float* row = x + th * headSize;
        float c, s;
        rope_cos_sin(firstPosition + t, i, dims, freqBase, freqScale, factors, &c, &s);
        int a, b;
        rope_pair(i, dims, neox, &a, &b);
        float xa = row[a], xb = row[b];
        row[a] = xa * c - xb * s;
        row[b] = xb * c + xa * s;
    }
}

__device__ __forceinline__ void store_cache(void* cache, int f16, i64 i, float v)
{
    if (f16) ((u16*)cache)[i] = f2h(v);
    else ((float*)cache)[i] = v;
}

// The attention prologue of a batch in one launch: q [tokens, heads, headSize] and k [tokens, kvHeads, headSize] rotated
// in place as `rope` does, and k and v stored into the caches (F16 when f16 is 1, F32 when 0) at rows firstPosition + t.
// f16 = -1 (a Q8_0 cache): only the rotations, nothing stored; store_kv_q8_0 quantizes k and v into the cache next.
// Work items, grid-stride: q's rotated pairs; per (token, kv head) k's rotated pairs and then its unrotated tail
// (dims .. headSize); v's elements (the tail and v only when storing: LaunchGeometry.RopeStoreKvItems).
extern "C" __global__ void rope_store_kv(float* q, float* k, const float* v, void* kCache, void* vCache, int f16, int tokens, int heads, int kvHeads,
                                         int headSize, int dims, int firstPosition, float freqBase, float freqScale, int neox, const float* factors)
{
    PDL_SMALL_ENTRY();
    bool store = f16 >= 0;
    int half = dims >> 1, kItems = store ? half + (headSize - dims) : half;
    i64 qTotal = (i64)tokens * heads * half, kTotal = (i64)tokens * kvHeads * kItems, kvd = (i64)kvHeads * headSize;
    i64 vTotal = store ? (i64)tokens * kvd : 0;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < qTotal + kTotal + vTotal; idx += (i64)gridDim.x * blockDim.x)
    {
        if (idx < qTotal)
        {
            int i = (int)(idx % half);
            i64 th = idx / half;
            float* row = q + th * headSize;
            float c, s;
            rope_cos_sin(firstPosition + (int)(th / heads), i, dims, freqBase, freqScale, factors, &c, &s);
            int a, b;
            rope_pair(i, dims, neox, &a, &b);
            float xa = row[a], xb = row[b];
            row[a] = xa * c - xb * s;
            row[b] = xb * c + xa * s;
        }
        else if (idx < qTotal + kTotal)
        {
            i64 j = idx - qTotal;
            int i = (int)(j % kItems);
            i64 th = j / kItems; // token * kvHeads + kv head
            int t = (int)(th / kvHeads);
            float* row = k + th * headSize;
            i64 cacheRow = ((i64)firstPosition + t) * kvd + (th - (i64)t * kvHeads) * headSize;
            if (i < half)
            {
                float c, s;
                rope_cos_sin(firstPosition + t, i, dims, freqBase, freqScale, factors, &c, &s);
                int a, b;
                rope_pair(i, dims, neox, &a, &b);
                float xa = row[a], xb = row[b];
                float ra = xa * c - xb * s, rb = xb * c + xa * s;
                row[a] = ra;
                row[b] = rb;
                if (!store) continue;
                store_cache(kCache, f16, cacheRow + a, ra);
                store_cache(kCache, f16, cacheRow + b, rb);
            }
            else
            {
                int e = dims + (i - half);
                store_cache(kCache, f16, cacheRow + e, row[e]);
            }
        }
        else
        {
            i64 j = idx - qTotal - kTotal;
            store_cache(vCache, f16, (i64)firstPosition * kvd + j, v[j]);
        }
    }
}

// Causal grouped-query attention. One block per (head, token), ATT_WARPS warps; each warp walks a strided subset
// of the cached positions with an online softmax (running max, sum, weighted V), then the warps are merged.
// Lane l holds elements 4l .. 4l+3 and 128 + 4l .. 128 + 4l+3 of the head (att_elem; headSize <= ATTENTION_MAX_HEAD).
// A long decode history is split over several blocks per head (attention_split).
// The cache type is the template argument KV: T_F32, T_F16, T_Q8_0 or T_Q4_0. A Q8_0 cache is GGUF Q8_0 blocks (f16 d, then 32
// int8 q; element value d * q) over the rows back to back: element i (position * kvStride + kv head * headSize + e) is int8
// 2 + i % 32 of the 34-byte block i / 32 (docs/gpu-kernels.md#q8_0-kv-cache). A Q4_0 cache is GGUF Q4_0 blocks (f16 d, then 16
// bytes; element value d * (q - 8)): element r = i % 32 of 18-byte block i / 32 is the low nibble of byte 2 + r (r < 16), or
// the high nibble of byte 2 + r - 16 (docs/gpu-kernels.md#q4_0-kv-cache). Their heads are whole blocks (headSize a multiple of 32).
#define ATT_WARPS ATTENTION_WARPS
// Whether a cache type is stored in 32-element blocks with an f16 scale (Q8_0, Q4_0).
#define KV_BLOCKS(KV) ((KV) == T_Q8_0 || (KV) == T_Q4_0)
// ATTENTION_DECODE_P and ATTENTION_SPLIT_P (tuning defines, default 4): positions a warp of attention_decode_* and
// attention_split_* scores per step (attend's P). ATTENTION_H128_BLOCKS (default 2): blocks an SM should hold of the
// *_h128 decode kernels (their launch bound; below).
#ifndef ATTENTION_DECODE_P
#define ATTENTION_DECODE_P 4
#endif
#ifndef ATTENTION_SPLIT_P
#define ATTENTION_SPLIT_P 4
#endif
#ifndef ATTENTION_H128_BLOCKS
#define ATTENTION_H128_BLOCKS 2
#endif

// A block cache type's 32-element block: an f16 scale, then QuantBytes bytes of quants (Q8_0: 32 int8; Q4_0: 16 bytes of
// nibbles, element r in byte r % 16).
template <int KV> struct KvBlock
{
    static const int QuantBytes = KV == T_Q8_0 ? 32 : 16, Bytes = 2 + QuantBytes;
};

// Bytes that n elements take in a cache of type KV (n a multiple of 32 for the block types).
template <int KV>
__device__ __forceinline__ i64 kv_bytes(i64 n) { return KV_BLOCKS(KV) ? (n >> 5) * KvBlock<KV>::Bytes : n * (KV == T_F16 ? 2 : 4); }

// Byte `b` (0..3) of w as a signed 8-bit value.
__device__ __forceinline__ float sbyte(u32 w, int b) { return (float)((int)(w << (24 - 8 * b)) >> 24); }

// KV_BYTE_PERMUTE (tuning define, default 1): turns a Q8_0 or Q4_0 cache's quants into floats with byte_minus below; 0 takes
// sbyte / a shift, mask and conversion instead. The same values either way (both are exact). Written after Nsight Compute
// showed the narrow Q8_0 and Q4_0 split kernels bound by issuing instructions, not memory; with 1 they also need fewer
// registers, so the *_h128 one-token kernels fit their launch bound without spilling (docs/gpu-kernels.md#decode-attention-instructions).
#ifndef KV_BYTE_PERMUTE
#define KV_BYTE_PERMUTE 1
#endif

// Byte `b` (0..3, a constant) of w, minus `bias`, as a float, exactly: the byte is permuted under the exponent of 2^23 (one
// byte permute) and 2^23 + bias subtracted (one add), where a sign extension takes two shifts and an int-to-float conversion,
// whose pipe is the narrow one (docs/gpu-kernels.md#decode-attention-registers). On w ^ 0x80808080 with bias 128 it gives the
// signed byte's value (Q8_0); on nibbles with bias 8, q - 8 (Q4_0).
__device__ __forceinline__ float byte_minus(u32 w, int b, float bias)
{
    return __int_as_float((int)__byte_perm(w, 0x4B000000u, 0x7440u | (u32)b)) - (8388608.f + bias);
}

// Element of the head that register j of a lane holds: 4 consecutive elements per lane (lane 0: 0-3, lane 1: 4-7, ...),
// then the next 128; so a lane reads its part of a K or V row with one 8-byte (F16) or 16-byte (F32) load per group of 4.
#if ATT_PER_LANE % 4 != 0
#error "attention registers come in groups of 4 elements per lane"
#endif
__device__ __forceinline__ int att_elem(int lane, int j) { return (j >> 2) * 128 + lane * 4 + (j & 3); }

// Elements i .. i+3 of a K/V cache row (i a multiple of 4) as loaded, before they are turned into floats: attend keeps P
// positions' K and V groups in flight in these, and decodes each where it is used, so a step's loads cost a warp 2 (F16) or
// 3 (Q8_0, Q4_0) registers per group instead of 4 floats. Load with load (one aligned load; the caller checked the alignment),
// load_at (the same loads at addresses the caller formed: kv_group_offsets) or load_each (element by element, 0 outside
// [0, count)). Use with:
//  - values(x, i): the 4 elements before the block's scale (F16/F32: the values; Q8_0: q; Q4_0: q - 8); i is the group's
//    first element, which Q4_0 needs to pick the nibbles;
//  - scaled(s): s times the block's scale (F16/F32: s), so a sum over the group's elements takes the scale once;
//  - ldkv4 (below): the 4 values, the scale applied to each.
// Q8_0: the 4 int8 lie in one block at a 2-byte-aligned address (blocks are 34 bytes, i + 2 is even): two u16 loads, and
// the block's f16 d (a third u16 load; the 8 lanes that read one block load the same d). Q4_0: the 4 elements' nibbles lie in
// 4 bytes of one block at a 2-byte-aligned address (blocks are 18 bytes, i % 16 is a multiple of 4): the same three loads.
template <int KV> struct KvGroup;
template <> struct KvGroup<T_F32>
{
    float4 f;
    __device__ __forceinline__ void load(const void* p, i64 i) { f = *(const float4*)((const float*)p + i); }
    __device__ __forceinline__ void load_at(const u8* q, const u8*) { f = *(const float4*)q; }
    __device__ __forceinline__ void values(float* out, i64) const { out[0] = f.x; out[1] = f.y; out[2] = f.z; out[3] = f.w; }
    __device__ __forceinline__ float scaled(float s) const { return s; }
};
template <> struct KvGroup<T_F16>
{
    uint2 w;
    __device__ __forceinline__ void load(const void* p, i64 i) { w = *(const uint2*)((const u16*)p + i); }
    __device__ __forceinline__ void load_at(const u8* q, const u8*) { w = *(const uint2*)q; }
    __device__ __forceinline__ void values(float* out, i64) const
    {
        out[0] = h2f((u16)(w.x & 0xFFFFu)); out[1] = h2f((u16)(w.x >> 16));
        out[2] = h2f((u16)(w.y & 0xFFFFu)); out[3] = h2f((u16)(w.y >> 16));
    }
    __device__ __forceinline__ float scaled(float s) const { return s; }
};
// The words of a block type's group as loaded (Q8_0 and Q4_0 alike): the 4 bytes that hold its quants, as two u16 (lo: bytes
// 0-1, hi: bytes 2-3), and the block's f16 scale.
template <int KV>
struct KvBlockWords
{
    u32 lo, hi, d;
    __device__ __forceinline__ void load(const void* p, i64 i)
    {
        const u8* b = (const u8*)p + (i >> 5) * KvBlock<KV>::Bytes;
        load_at(b + 2 + (i & (KvBlock<KV>::QuantBytes - 1)), b);
    }
    // q: the group's first quant byte; b: its block (the scale).
    __device__ __forceinline__ void load_at(const u8* q, const u8* b) { lo = ((const u16*)q)[0]; hi = ((const u16*)q)[1]; d = *(const u16*)b; }
    __device__ __forceinline__ float scaled(float s) const { return h2f((u16)d) * s; }
};
template <> struct KvGroup<T_Q8_0> : KvBlockWords<T_Q8_0>
{
    __device__ __forceinline__ void values(float* out, i64) const
    {
#if KV_BYTE_PERMUTE
        u32 w = (lo | (hi << 16)) ^ 0x80808080u; // each int8 + 128, as an unsigned byte
#pragma unroll
        for (int t = 0; t < 4; t++) out[t] = byte_minus(w, t, 128.f);
#else
        u32 w = lo | (hi << 16);
        out[0] = sbyte(w, 0); out[1] = sbyte(w, 1); out[2] = sbyte(w, 2); out[3] = sbyte(w, 3);
#endif
    }
};
template <> struct KvGroup<T_Q4_0> : KvBlockWords<T_Q4_0>
{
    __device__ __forceinline__ void values(float* out, i64 i) const
    {
        u32 w = ((lo | (hi << 16)) >> (i & 16 ? 4 : 0)) & 0x0F0F0F0Fu; // elements r < 16: low nibbles; r >= 16: high
#pragma unroll
        for (int t = 0; t < 4; t++)
#if KV_BYTE_PERMUTE
            out[t] = byte_minus(w, t, 8.f);
#else
            out[t] = (float)((int)((w >> (8 * t)) & 0xFu) - 8);
#endif
    }
};

// Byte offsets, from the start of a cache, of the group of element i (a multiple of 4): where KvGroup::load_at reads its
// values (q) and, for the block types, its block's scale (b).
template <int KV>
__device__ __forceinline__ void kv_group_offsets(i64 i, i64& q, i64& b)
{
    if (KV_BLOCKS(KV))
    {
        b = (i >> 5) * KvBlock<KV>::Bytes;
        q = b + 2 + (i & (KvBlock<KV>::QuantBytes - 1));
    }
    else
        q = b = i * (KV == T_F16 ? 2 : 4);
}

// Elements i .. i+3 of a K/V cache row as floats (i a multiple of 4, aligned as KvGroup::load needs).
template <int KV>
__device__ __forceinline__ void ldkv4(const void* p, i64 i, float* out)
{
    KvGroup<KV> g;
    g.load(p, i);
    g.values(out, i);
    if (KV_BLOCKS(KV))
    {
        float s = g.scaled(1.f);
#pragma unroll
        for (int t = 0; t < 4; t++) out[t] *= s;
    }
}

// A group read element by element where it is not whole or not aligned: elements at or past count read as 0 (all-zero bits
// for F32, F16 and Q8_0; nibble 8 for Q4_0; and with count 0 a scale of 0). Block heads are whole blocks (the host checks),
// so the group lies in one block.
template <int KV>
__device__ __forceinline__ KvGroup<KV> load_each(const void* p, i64 i, int count)
{
    KvGroup<KV> g;
    if (KV == T_F32)
    {
        float* f = (float*)&g;
#pragma unroll
        for (int t = 0; t < 4; t++) f[t] = t < count ? ((const float*)p)[i + t] : 0.f;
    }
    else if (KV == T_F16)
    {
        u32 h[4];
#pragma unroll
        for (int t = 0; t < 4; t++) h[t] = t < count ? ((const u16*)p)[i + t] : 0u;
        u32* w = (u32*)&g;
        w[0] = h[0] | (h[1] << 16); w[1] = h[2] | (h[3] << 16);
    }
    else
    {
        const u8* b = (const u8*)p + (i >> 5) * KvBlock<KV>::Bytes;
        u32 q[4];
#pragma unroll
        for (int t = 0; t < 4; t++) q[t] = t < count ? b[2 + ((i + t) & (KvBlock<KV>::QuantBytes - 1))] : (KV == T_Q4_0 ? 0x88u : 0u);
        u32* w = (u32*)&g;
        w[0] = q[0] | (q[1] << 8); w[1] = q[2] | (q[3] << 8);
        w[2] = count > 0 ? (u32)b[0] | ((u32)b[1] << 8) : 0u;
    }
    return g;
}

// Shared state of one attention block: each warp's running max, sum and weighted V accumulator.
struct AttentionShared
{
    float max[ATT_WARPS], sum[ATT_WARPS];
    float acc[ATT_WARPS][ATTENTION_MAX_HEAD];
};

// log2 of a power of two up to 32 (a compile-time constant where n is).
__host__ __device__ constexpr int log2_pow2(int n) { return n <= 1 ? 0 : 1 + log2_pow2(n >> 1); }

// One warp's walk over its positions of [begin, end): attend's loop (below), for one way of reading the cache. VECTOR: whole
// aligned groups, each lane's group addresses formed once (kv_group_offsets) and moved by a position's row bytes; otherwise
// element by element (load_each). The warp's running max m (the same in every lane), each lane's softmax sum l of the
// positions it owns (see attend) and its accumulators acc come back through the references.
template <int KV, int P, int PL, bool VECTOR>
__device__ __forceinline__ void attend_walk(const float* qr, const void* k, const void* v, int kh, i64 kvStride, int headSize,
                                            int begin, int end, float& m, float& l, float* acc)
{
    constexpr int G = PL / 4, bits = log2_pow2(P), shift = 5 - bits;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, own = lane >> shift;
    const float negInf = -__int_as_float(0x7f800000);
    // Each group's first element within the head (a group past the head reads element e0 % headSize instead: its q is 0,
    // so it adds nothing, and its V accumulators are never read) and, VECTOR, its K addresses at position 0; V's are K's
    // moved by vk (the same for every lane, so it costs no register of each lane).
    int e0[G];
    const u8 *kq[G], *kb[G];
    const i64 vk = (const u8*)v - (const u8*)k;
#pragma unroll
    for (int g = 0; g < G; g++)
    {
        e0[g] = att_elem(lane, 4 * g);
        if (VECTOR)
        {
            i64 q, b;
            kv_group_offsets<KV>((i64)kh * headSize + e0[g] % headSize, q, b);
            kq[g] = (const u8*)k + q; kb[g] = (const u8*)k + b;
        }
    }
    const u32 rowBytes = (u32)kv_bytes<KV>(kvStride); // a position's K (or V) row: kv heads x head size elements, kilobytes
#if defined(PE_CUDA) && ATTENTION_PREFETCH_STEPS > 0
    // The K and V rows this warp reads ATTENTION_PREFETCH_STEPS steps ahead, asked of L2 a 128-byte line a lane: lane
    // takes line (part % lines) of K (part < lines) or V of the step's i-th position. Fixed per lane, so set up once.
    // A Q8_0 head (34 bytes per 32 elements) starts anywhere in a line, so it may touch one line more than its bytes fill:
    // one more part, its address clamped to the head's last byte (never past the row).
    const int headBytes = (int)kv_bytes<KV>(headSize), lines = (headBytes + 127) / 128 + (KV_BLOCKS(KV) ? 1 : 0);
    const int pfItem = lane / (2 * lines), pfPart = lane % (2 * lines);
    const int pfAhead = ATTENTION_PREFETCH_STEPS * ATT_WARPS * P + pfItem * ATT_WARPS;
    const int pfOffset = KV_BLOCKS(KV) ? min(128 * (pfPart % lines), headBytes - 1) : 128 * (pfPart % lines);
    const u8* pfRow = (const u8*)(pfPart < lines ? k : v) + kv_bytes<KV>((i64)kh * headSize) + pfOffset;
#endif
    for (int p0 = begin + warp; p0 < end; p0 += ATT_WARPS * P)
    {
#if defined(PE_CUDA) && ATTENTION_PREFETCH_STEPS > 0
        if (pfItem < P && p0 + pfAhead < end)
            asm volatile("prefetch.global.L2 [%0];" ::"l"(pfRow + (u64)(u32)(p0 + pfAhead) * rowBytes));
#endif
        // Slot j of a lane holds position p0 + (own ^ j) * ATT_WARPS: the lane's own position first, so the sums below need
        // no selects. A position past the end reads the last one (finite values; its weight is 0).
        KvGroup<KV> kg[P][G], vg[P][G];
#pragma unroll
        for (int j = 0; j < P; j++)
        {
            int p = min(p0 + (own ^ j) * ATT_WARPS, end - 1);
#pragma unroll
            for (int g = 0; g < G; g++)
            {
                if (VECTOR)
                {
                    const u8* q = kq[g] + (u64)(u32)p * rowBytes;
                    const u8* b = kb[g] + (u64)(u32)p * rowBytes;
                    kg[j][g].load_at(q, b);
                    vg[j][g].load_at(q + vk, b + vk);
                }
                else
                {
                    i64 i = (i64)p * kvStride + (i64)kh * headSize + e0[g];
                    int count = min(4, headSize - e0[g]);
                    kg[j][g] = load_each<KV>(k, i, count);
                    vg[j][g] = load_each<KV>(v, i, count);
                }
            }
        }
        // Each slot's partial score: per group the 4 products, then the block's scale once.
        float s[P];
#pragma unroll
        for (int j = 0; j < P; j++)
        {
            s[j] = 0.f;
#pragma unroll
            for (int g = 0; g < G; g++)
            {
                float x[4];
                kg[j][g].values(x, (i64)kh * headSize + e0[g]);
                float dot = qr[4 * g] * x[0];
#pragma unroll
                for (int t = 1; t < 4; t++) dot += qr[4 * g + t] * x[t];
                s[j] += kg[j][g].scaled(dot);
            }
        }
        // The P sums over the warp at once: at lane bit shift + b (b = bits-1 .. 0) a lane keeps the slots whose position
        // shares that bit of its own and adds its partner's (whose slots j + 2^b hold the same positions), so after bits
        // exchanges slot 0 holds the lane's own position's sum over 2^bits lanes; the usual butterfly finishes it.
        // P - 1 + 5 - log2 P exchanges (P = 4: 6) where P warp sums take 5P (20).
#pragma unroll
        for (int b = bits - 1; b >= 0; b--)
#pragma unroll
            for (int j = 0; j < (1 << b); j++) s[j] += lane_xor(s[j + (1 << b)], 1 << (shift + b));
#pragma unroll
        for (int o = 1 << (shift - 1); o > 0; o >>= 1) s[0] += lane_xor(s[0], o);
        float score = p0 + own * ATT_WARPS < end ? s[0] : negInf;
        float mStep = score;
#pragma unroll
        for (int b = 0; b < bits; b++) mStep = fmaxf(mStep, lane_xor(mStep, 1 << (shift + b)));
        float mNew = fmaxf(m, mStep); // finite: position p0 < end is some lane's own
        float correction = expf(m - mNew);
        // The lane's own weight, then the others' from the lanes that own them (weight[j]: slot j's position).
        float weight[P];
        weight[0] = expf(score - mNew); // 0 past the end
        l = l * correction + weight[0];
#pragma unroll
        for (int b = 0; b < bits; b++)
#pragma unroll
            for (int j = 0; j < (1 << b); j++) weight[j + (1 << b)] = lane_xor(weight[j], 1 << (shift + b));
#pragma unroll
        for (int j = 0; j < PL; j++) acc[j] *= correction;
#pragma unroll
        for (int j = 0; j < P; j++)
#pragma unroll
            for (int g = 0; g < G; g++)
            {
                float x[4], w = vg[j][g].scaled(weight[j]);
                vg[j][g].values(x, (i64)kh * headSize + e0[g]);
#pragma unroll
                for (int t = 0; t < 4; t++) acc[4 * g + t] += w * x[t];
            }
        m = mNew;
    }
}

// The warps of one block score positions [begin, end) of (head h, token t) against q (warp w takes begin + w, then every
// ATT_WARPS * P-th), each with an online softmax, and publish their partial results in sh; then every thread derives
// the block's max (mAll), the rescaling factor of each warp and the block's softmax denominator (0 when no position).
// P = positions a warp scores per step (a power of two up to 32): their K and V rows are all loaded before the first sum,
// so a step waits for memory once instead of once per position; they wait in registers as loaded (KvGroup) and are turned
// into floats where they are used. A decode step (one token: heads blocks in flight) uses ATTENTION_DECODE_P /
// ATTENTION_SPLIT_P; a prompt has heads x tokens blocks to hide latency with, and there the registers of several positions
// cost more in occupancy. The lanes of a warp share out a step's P positions for the softmax (lane l owns position
// l >> (5 - log2 P) of the step): the scores are summed for all P at once, and each lane takes the exponential of its own
// position only and gets the other weights from their owners (docs/gpu-kernels.md#decode-attention-instructions).
// PL = head elements a lane holds (att_elem): ATT_PER_LANE for any head size up to ATTENTION_MAX_HEAD, 4 for heads of up to
// 128 (the *_h128 kernels). A lane's registers past the head have q = 0 and add nothing to its sums.
template <int KV, int P, int PL = ATT_PER_LANE>
__device__ __forceinline__ void attend(const float* qp, const void* k, const void* v, int kh, i64 kvStride, int headSize, float scale,
                                       int begin, int end, AttentionShared& sh, float* mAll, float* factor, float* denominator)
{
    static_assert(PL % 4 == 0 && PL <= ATT_PER_LANE, "a lane holds whole groups of 4, at most ATT_PER_LANE elements");
    static_assert(P >= 1 && P <= 32 && (P & (P - 1)) == 0, "a step's positions are shared out over the lanes: a power of two up to 32");
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float qr[PL], acc[PL];
#pragma unroll
    for (int j = 0; j < PL; j++)
    {
        int e = att_elem(lane, j);
        qr[j] = e < headSize ? qp[e] * scale : 0.f;
        acc[j] = 0.f;
    }
    // Whole groups of 4 can be read with one load when rows and the caches are aligned (the same for every lane). Q8_0: every
    // group of 4 lies in one block when heads and rows are whole blocks, and its int8 are 2-byte aligned when the caches are.
    bool vector = KV_BLOCKS(KV) ? headSize % 32 == 0 && kvStride % 32 == 0 && (((unsigned long long)k | (unsigned long long)v) & 1) == 0
                               : headSize % 4 == 0 && kvStride % 4 == 0 && (((unsigned long long)k | (unsigned long long)v) & (KV == T_F16 ? 7 : 15)) == 0;
    float m = -__int_as_float(0x7f800000), l = 0.f;
    if (vector)
        attend_walk<KV, P, PL, true>(qr, k, v, kh, kvStride, headSize, begin, end, m, l, acc);
    else
        attend_walk<KV, P, PL, false>(qr, k, v, kh, kvStride, headSize, begin, end, m, l, acc);
    // The warp's softmax sum: each lane summed the weights of the positions it owned.
    constexpr int shift = 5 - log2_pow2(P);
#pragma unroll
    for (int o = 1 << shift; o < 32; o <<= 1) l += lane_xor(l, o);
    if (lane == 0) { sh.max[warp] = m; sh.sum[warp] = l; }
#pragma unroll
    for (int j = 0; j < PL; j++) sh.acc[warp][att_elem(lane, j)] = acc[j];
    __syncthreads();
    float mBlock = sh.max[0];
#pragma unroll
    for (int w = 1; w < ATT_WARPS; w++) mBlock = fmaxf(mBlock, sh.max[w]);
    float d = 0.f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++)
    {
        factor[w] = sh.sum[w] > 0.f ? expf(sh.max[w] - mBlock) : 0.f; // a warp that saw no position contributes nothing
        d += sh.sum[w] * factor[w];
    }
    *mAll = mBlock;
    *denominator = d;
}

// Element e of the block's unnormalized output: the warps' accumulators rescaled to the block's max.
__device__ __forceinline__ float block_numerator(const AttentionShared& sh, const float* factor, int e)
{
    float num = 0.f;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) num += sh.acc[w][e] * factor[w];
    return num;
}

// Writes out[0 .. headSize) = value(e); with xq (headSize a multiple of 32) warp w also quantizes elements 32w .. 32w + 31
// into the 8-bit activation row at element offset o0, for the output projection's mat-vec.
template <typename Value>
__device__ __forceinline__ void write_head(float* op, int headSize, i64 o0, i8* xq, XScale* xs, Value value)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (xq == 0)
    {
        for (int e = threadIdx.x; e < headSize; e += blockDim.x) op[e] = value(e);
        return;
    }
    for (int e0 = warp * 32; e0 < headSize; e0 += blockDim.x)
    {
        float o = value(e0 + lane);
        op[e0 + lane] = o;
        quantize_block32(o, lane, xq + o0 + e0, xs + ((o0 + e0) >> 5));
    }
}

// out[t, h, :] = softmax(q[t, h] . K[0 .. firstPosition + t]) V for every head h and token t: one block per (head, token).
template <int KV, int P, int PL>
__device__ __forceinline__ void attention(const float* q, const void* k, const void* v, float* out, int firstPosition,
                                          int heads, int kvHeads, int headSize, float scale, i8* xq, XScale* xs)
{
    __shared__ AttentionShared sh;
    int h = blockIdx.x, t = blockIdx.y;
    i64 o0 = ((i64)t * heads + h) * headSize;
    float mAll, factor[ATT_WARPS], denominator;
    attend<KV, P, PL>(q + o0, k, v, h / (heads / kvHeads), (i64)kvHeads * headSize, headSize, scale, 0, firstPosition + t + 1, sh,
                   &mAll, factor, &denominator);
    write_head(out + o0, headSize, o0, xq, xs, [&](int e) { return block_numerator(sh, factor, e) / denominator; });
}

// One decode token over a long history, split over the positions ("flash decoding"): block (h, s) scores positions
// [s * chunk, (s + 1) * chunk) and writes its max, softmax sum and unnormalized output to partial[h, s, :] (headSize + 2
// floats); the last block of head h to finish (tickets[h] counts them, then is reset to 0 for the next launch) combines
// the gridDim.y partials and writes the head's output. A single block per head walks the whole history serially; here
// heads x splits blocks share it.
template <int KV, int PL>
__device__ __forceinline__ void attention_split(const float* q, const void* k, const void* v, float* out, int firstPosition, int heads,
                                                int kvHeads, int headSize, float scale, i8* xq, XScale* xs, float* partial, int* tickets, int chunk)
{
    __shared__ AttentionShared sh;
    __shared__ int isLast;
    int h = blockIdx.x, s = blockIdx.y, splits = gridDim.y;
    int positions = firstPosition + 1, begin = s * chunk, end = min(positions, begin + chunk);
    i64 o0 = (i64)h * headSize;
    float mAll, factor[ATT_WARPS], denominator;
    attend<KV, ATTENTION_SPLIT_P, PL>(q + o0, k, v, h / (heads / kvHeads), (i64)kvHeads * headSize, headSize, scale, begin, end, sh, &mAll, factor, &denominator);
    i64 stride = headSize + 2;
    float* mine = partial + ((i64)h * splits + s) * stride;
    for (int e = threadIdx.x; e < headSize; e += blockDim.x) mine[2 + e] = block_numerator(sh, factor, e);
    if (threadIdx.x == 0) { mine[0] = mAll; mine[1] = denominator; }
    __threadfence();   // this block's partial is visible device-wide before its ticket is taken
    __syncthreads();
    if (threadIdx.x == 0) isLast = atomicAdd(tickets + h, 1) == splits - 1;
    __syncthreads();
    if (!isLast) return;
    __threadfence();
    const float* all = partial + (i64)h * splits * stride;
    float mMax = -__int_as_float(0x7f800000), sum = 0.f;
    for (int i = 0; i < splits; i++) mMax = fmaxf(mMax, load_cg(all + i * stride));
    for (int i = 0; i < splits; i++) sum += load_cg(all + i * stride + 1) * expf(load_cg(all + i * stride) - mMax);
    write_head(out + o0, headSize, o0, xq, xs, [&](int e)
    {
        float num = 0.f;
        for (int i = 0; i < splits; i++) num += load_cg(all + i * stride + 2 + e) * expf(load_cg(all + i * stride) - mMax);
        return num / sum;
    });
    if (threadIdx.x == 0) tickets[h] = 0;
}

// __launch_bounds__: a block is ATTENTION_WARPS warps (512 threads), so a thread may use at most 128 registers; without
// the bound the compiler may take more and the launch fails with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (seen on an H100).
// The one-token kernels (decode, split, and rows below) come twice (docs/gpu-kernels.md#decode-attention-registers): for any head size (up to
// ATTENTION_MAX_HEAD: ATT_PER_LANE elements a lane), and *_h128 for heads of up to 128 (4 a lane), whose fewer registers let
// an SM hold ATTENTION_H128_BLOCKS blocks at once (the launch bound's second argument; the host splits a long history over
// as many blocks as are resident, LaunchGeometry.AttentionChunk).
#define ATTENTION_KERNEL(name, KV, P, PL, BLOCKS)                                                                      \
    extern "C" __global__ void __launch_bounds__(ATTENTION_WARPS * 32, BLOCKS) name(const float* q, const void* k, const void* v, float* out, int firstPosition, int heads, int kvHeads, \
                                    int headSize, float scale, i8* xq, XScale* xs)                                     \
    { PDL_SMALL_ENTRY(); attention<KV, P, PL>(q, k, v, out, firstPosition, heads, kvHeads, headSize, scale, xq, xs); }

ATTENTION_KERNEL(attention_f32, T_F32, 1, ATT_PER_LANE, 1)
ATTENTION_KERNEL(attention_f16, T_F16, 1, ATT_PER_LANE, 1)
ATTENTION_KERNEL(attention_q8_0, T_Q8_0, 1, ATT_PER_LANE, 1)
ATTENTION_KERNEL(attention_q4_0, T_Q4_0, 1, ATT_PER_LANE, 1)
ATTENTION_KERNEL(attention_decode_f32, T_F32, ATTENTION_DECODE_P, ATT_PER_LANE, 1)
ATTENTION_KERNEL(attention_decode_f16, T_F16, ATTENTION_DECODE_P, ATT_PER_LANE, 1)
ATTENTION_KERNEL(attention_decode_q8_0, T_Q8_0, ATTENTION_DECODE_P, ATT_PER_LANE, 1)
ATTENTION_KERNEL(attention_decode_q4_0, T_Q4_0, ATTENTION_DECODE_P, ATT_PER_LANE, 1)
ATTENTION_KERNEL(attention_decode_f32_h128, T_F32, ATTENTION_DECODE_P, 4, ATTENTION_H128_BLOCKS)
ATTENTION_KERNEL(attention_decode_f16_h128, T_F16, ATTENTION_DECODE_P, 4, ATTENTION_H128_BLOCKS)
ATTENTION_KERNEL(attention_decode_q8_0_h128, T_Q8_0, ATTENTION_DECODE_P, 4, ATTENTION_H128_BLOCKS)
ATTENTION_KERNEL(attention_decode_q4_0_h128, T_Q4_0, ATTENTION_DECODE_P, 4, ATTENTION_H128_BLOCKS)

#define ATTENTION_SPLIT_KERNEL(name, KV, PL, BLOCKS)                                                                    \
    extern "C" __global__ void __launch_bounds__(ATTENTION_WARPS * 32, BLOCKS) name(const float* q, const void* k, const void* v, float* out, int firstPosition, int heads, int kvHeads, \
                                    int headSize, float scale, i8* xq, XScale* xs, float* partial, int* tickets, int chunk) \
    { PDL_SMALL_ENTRY(); attention_split<KV, PL>(q, k, v, out, firstPosition, heads, kvHeads, headSize, scale, xq, xs, partial, tickets, chunk); }

ATTENTION_SPLIT_KERNEL(attention_split_f32, T_F32, ATT_PER_LANE, 1)
ATTENTION_SPLIT_KERNEL(attention_split_f16, T_F16, ATT_PER_LANE, 1)
ATTENTION_SPLIT_KERNEL(attention_split_q8_0, T_Q8_0, ATT_PER_LANE, 1)
ATTENTION_SPLIT_KERNEL(attention_split_q4_0, T_Q4_0, ATT_PER_LANE, 1)
ATTENTION_SPLIT_KERNEL(attention_split_f32_h128, T_F32, 4, ATTENTION_H128_BLOCKS)
ATTENTION_SPLIT_KERNEL(attention_split_f16_h128, T_F16, 4, ATTENTION_H128_BLOCKS)
ATTENTION_SPLIT_KERNEL(attention_split_q8_0_h128, T_Q8_0, 4, ATTENTION_H128_BLOCKS)
ATTENTION_SPLIT_KERNEL(attention_split_q4_0_h128, T_Q4_0, 4, ATTENTION_H128_BLOCKS)

// ---- Prompt attention on the tensor cores (F16 and Q8_0 caches, CUDA sm_80 and later; docs/gpu-kernels.md#prompt-attention) ----
// out[t, h, :] = softmax(q[t, h] . K[0 .. firstPosition + t]) V, as attention_f16 computes it, for a prompt (many tokens):
// a block takes FA_WARPS * 16 consecutive tokens of one head, warp w the w-th 16 of them. The block walks the history in
// chunks of FA_KEYS positions, staged in shared memory; per chunk each warp multiplies its 16 query rows with the chunk's
// keys (S = Q K^T, mma.m16n8k16 f16 -> f32), keeps an online softmax per row (running max and sum, in base 2: q carries
// scale * log2(e)), and adds P V for the chunk (P in f16). The per-token block of attention_f16 re-reads every K and V row
// once per token; here a row is read once per FA_WARPS * 16 tokens, and the products run on the tensor cores.
// Fragments (PTX ISA, mma.m16n8k16 with .f16, lane = 4 * g + c): A a0 = (row g, k 2c, 2c + 1), a1 = (row g + 8, same k),
// a2, a3 = the same at k + 8; B b0 = (k 2c, 2c + 1, column g), b1 = the same at k + 8; C c0, c1 = (row g, columns 2c,
// 2c + 1), c2, c3 = (row g + 8, same columns). Two adjacent 8-column C tiles of S are exactly the A fragment of P for 16
// keys, so P never leaves the registers.
#define FA_WARPS 4
#define FA_KEYS 64
#if defined(PE_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define PE_F16_MMA 1
__device__ __forceinline__ void mma_f16(const u32 (&a)[4], u32 b0, u32 b1, float (&c)[4])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Row max over the 4 lanes of a group (the lanes that hold one row of a C fragment).
__device__ __forceinline__ float group_max(float v)
{
    v = fmaxf(v, lane_xor(v, 1));
    return fmaxf(v, lane_xor(v, 2));
}
#endif

// Eight consecutive cache elements (e, a multiple of 8, to e + 7) of a row as f16, for the tiles of attention_mma: an F16 row's
// 16 bytes as they are; a Q8_0 row's values as ldkv4 decodes them (d · q), rounded to f16 (the tensor cores' input type).
template <int KV>
__device__ __forceinline__ uint4 kv_f16x8(const void* cache, i64 rowElement, int e)
{
    if (KV == T_F16) return *(const uint4*)((const u16*)cache + rowElement + e);
    float a[4], b[4];
    ldkv4<KV>(cache, rowElement + e, a);
    ldkv4<KV>(cache, rowElement + e + 4, b);
    return make_uint4(pack_h2(a[0], a[1]), pack_h2(a[2], a[3]), pack_h2(b[0], b[1]), pack_h2(b[2], b[3]));
}

template <int KV, int D>
__device__ __forceinline__ void attention_mma(const float* q, const void* k, const void* v, float* out, int firstPosition, int tokens,
                                              int heads, int kvHeads, float scale, u16* outH)
{
#if defined(PE_F16_MMA)
    __shared__ __align__(16) u16 ks[FA_KEYS][D + 8]; // + 8 halves: rows 16 bytes apart in the banks, and 16-byte aligned for ldmatrix
    __shared__ __align__(16) u16 vs[FA_KEYS][D + 8];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
    int h = blockIdx.x, kh = h / (heads / kvHeads);
    int tBlock = blockIdx.y * (FA_WARPS * 16), t0 = tBlock + warp * 16;
    i64 kvStride = (i64)kvHeads * D, kvOffset = (i64)kh * D;
    // This lane's query rows: tokens t0 + g and t0 + g + 8 (clamped: rows past the end are computed, never written).
    int ta = min(t0 + g, tokens - 1), tb = min(t0 + g + 8, tokens - 1);
    const float log2e = 1.4426950408889634f;
    u32 qa[D / 16][4];
    {
        const float* ra = q + ((i64)ta * heads + h) * D;
        const float* rb = q + ((i64)tb * heads + h) * D;
        float f = scale * log2e;
#pragma unroll
        for (int kk = 0; kk < D / 16; kk++)
        {
            int e = 16 * kk + 2 * c;
            qa[kk][0] = pack_h2(ra[e] * f, ra[e + 1] * f);
            qa[kk][1] = pack_h2(rb[e] * f, rb[e + 1] * f);
            qa[kk][2] = pack_h2(ra[e + 8] * f, ra[e + 9] * f);
            qa[kk][3] = pack_h2(rb[e + 8] * f, rb[e + 9] * f);
        }
    }
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    const float negInf = -__int_as_float(0x7f800000);
    float ma = negInf, mb = negInf, la = 0.f, lb = 0.f; // rows g, g + 8: running max (base 2) and this lane's part of the sum
    int lastA = firstPosition + t0 + g, lastB = lastA + 8;           // the last position each row sees
    int warpLast = firstPosition + min(t0 + 15, tokens - 1);          // ... and the warp's last row
    int blockLast = firstPosition + min(tBlock + FA_WARPS * 16, tokens) - 1;
    for (int p0 = 0; p0 <= blockLast; p0 += FA_KEYS)
    {
        __syncthreads(); // the previous chunk is consumed
        for (int i = threadIdx.x; i < FA_KEYS * (D / 8); i += blockDim.x)
        {
            int r = i / (D / 8), e = (i % (D / 8)) * 8, p = p0 + r;
            uint4 kw = make_uint4(0, 0, 0, 0), vw = kw;
            if (p <= blockLast)
            {
                kw = kv_f16x8<KV>(k, (i64)p * kvStride + kvOffset, e);
                vw = kv_f16x8<KV>(v, (i64)p * kvStride + kvOffset, e);
            }
            *(uint4*)&ks[r][e] = kw;
            *(uint4*)&vs[r][e] = vw;
        }
        __syncthreads();
        if (p0 > warpLast) continue; // every row of this warp is before the chunk (still at the barriers above)

        float sc[FA_KEYS / 8][4];
#pragma unroll
        for (int n = 0; n < FA_KEYS / 8; n++)
        {
            sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < D / 16; kk++)
            {
                const u16* kr = &ks[8 * n + g][16 * kk + 2 * c];
                mma_f16(qa[kk], *(const u32*)kr, *(const u32*)(kr + 8), sc[n]);
            }
        }
        float mxa = ma, mxb = mb;
#pragma unroll
        for (int n = 0; n < FA_KEYS / 8; n++)
#pragma unroll
            for (int j = 0; j < 2; j++)
            {
                int p = p0 + 8 * n + 2 * c + j;
                if (p > lastA) sc[n][j] = negInf;
                if (p > lastB) sc[n][2 + j] = negInf;
                mxa = fmaxf(mxa, sc[n][j]);
                mxb = fmaxf(mxb, sc[n][2 + j]);
            }
        mxa = group_max(mxa);
        mxb = group_max(mxb);
        // A row that has seen no position yet keeps max -inf: its weights are 0 and nothing is rescaled.
        float ca = mxa == negInf ? 1.f : exp2f(ma - mxa), cb = mxb == negInf ? 1.f : exp2f(mb - mxb);
        float sa = mxa == negInf ? 0.f : mxa, sb = mxb == negInf ? 0.f : mxb;
        la *= ca;
        lb *= cb;
#pragma unroll
        for (int n = 0; n < D / 8; n++) { o[n][0] *= ca; o[n][1] *= ca; o[n][2] *= cb; o[n][3] *= cb; }
#pragma unroll
        for (int j = 0; j < FA_KEYS / 16; j++)
        {
            u32 pa[4];
            float w[8];
#pragma unroll
            for (int i = 0; i < 2; i++)
            {
                w[4 * i + 0] = exp2f(sc[2 * j + i][0] - sa);
                w[4 * i + 1] = exp2f(sc[2 * j + i][1] - sa);
                w[4 * i + 2] = exp2f(sc[2 * j + i][2] - sb);
                w[4 * i + 3] = exp2f(sc[2 * j + i][3] - sb);
                la += w[4 * i] + w[4 * i + 1];
                lb += w[4 * i + 2] + w[4 * i + 3];
            }
            pa[0] = pack_h2(w[0], w[1]); // row g, keys 2c, 2c + 1 of these 16
            pa[1] = pack_h2(w[2], w[3]); // row g + 8
            pa[2] = pack_h2(w[4], w[5]); // row g, keys 8 + 2c ..
            pa[3] = pack_h2(w[6], w[7]);
            // B = V rows 16j .. 16j + 15, columns 8n .. 8n + 7, transposed by ldmatrix: lanes 0-7 address rows 16j + 0..7 of
            // column tile n, lanes 8-15 rows 16j + 8..15, lanes 16-31 the same for tile n + 1.
#pragma unroll
            for (int n = 0; n < D / 8; n += 2)
            {
                int mi = lane >> 3, ri = lane & 7;
                unsigned addr = (unsigned)__cvta_generic_to_shared(&vs[16 * j + ri + 8 * (mi & 1)][8 * (n + (mi >> 1))]);
                u32 b0, b1, b2, b3;
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                             : "=r"(b0), "=r"(b1), "=r"(b2), "=r"(b3) : "r"(addr));
                mma_f16(pa, b0, b1, o[n]);
                mma_f16(pa, b2, b3, o[n + 1]);
            }
        }
        ma = mxa;
        mb = mxb;
    }
    la += lane_xor(la, 1);
    la += lane_xor(la, 2);
    lb += lane_xor(lb, 1);
    lb += lane_xor(lb, 2);
    float ia = la > 0.f ? 1.f / la : 0.f, ib = lb > 0.f ? 1.f / lb : 0.f;
    bool wa = t0 + g < tokens, wb = t0 + g + 8 < tokens;
    float* oa = out + ((i64)ta * heads + h) * D;
    float* ob = out + ((i64)tb * heads + h) * D;
#pragma unroll
    for (int n = 0; n < D / 8; n++)
    {
        int e = 8 * n + 2 * c;
        float2 va = make_float2(o[n][0] * ia, o[n][1] * ia), vb = make_float2(o[n][2] * ib, o[n][3] * ib);
        if (wa) *(float2*)(oa + e) = va;
        if (wb) *(float2*)(ob + e) = vb;
        if (outH != 0) // the output projection's cuBLAS GEMM input (docs/gpu-kernels.md#prompt-gemm-inputs)
        {
            if (wa) *(u32*)(outH + (oa - out) + e) = pack_h2(va.x, va.y);
            if (wb) *(u32*)(outH + (ob - out) + e) = pack_h2(vb.x, vb.y);
        }
    }
#endif
}

#define ATTENTION_MMA_KERNEL(name, KV, D)                                                                              \
    extern "C" __global__ void __launch_bounds__(FA_WARPS * 32) attention_mma_##name##_d##D(const float* q, const void* k, const void* v, \
                                    float* out, int firstPosition, int tokens, int heads, int kvHeads, float scale,   \
                                    u16* outH)                                                                          \
    { PDL_ENTRY(); attention_mma<KV, D>(q, k, v, out, firstPosition, tokens, heads, kvHeads, scale, outH); }

ATTENTION_MMA_KERNEL(f16, T_F16, 64)
ATTENTION_MMA_KERNEL(f16, T_F16, 128)
ATTENTION_MMA_KERNEL(q8_0, T_Q8_0, 64)
ATTENTION_MMA_KERNEL(q4_0, T_Q4_0, 64)
ATTENTION_MMA_KERNEL(q8_0, T_Q8_0, 128)
ATTENTION_MMA_KERNEL(q4_0, T_Q4_0, 128)

// ---- Multi-sequence batches (docs/batching.md#backends). A batch holds segments of several sequences, each with its own
// ---- positions and KV slot; the host uploads one table for the whole batch: rowInfo[2t] is row t's position in its
// ---- sequence and rowInfo[2t + 1] the cache row where its sequence's position 0 lives. One launch covers every segment.

// rope_store_kv for a multi-sequence batch: row t is rotated at position rowInfo[2t] and its k/v stored at cache row
// rowInfo[2t + 1] + rowInfo[2t]. Work items, and f16 = -1 (a Q8_0 cache: rotations only), as in rope_store_kv.
extern "C" __global__ void rope_store_kv_rows(float* q, float* k, const float* v, void* kCache, void* vCache, int f16, int tokens, int heads,
                                              int kvHeads, int headSize, int dims, const int* rowInfo, float freqBase, float freqScale, int neox,
                                              const float* factors)
{
    PDL_ENTRY();
    bool store = f16 >= 0;
    int half = dims >> 1, kItems = store ? half + (headSize - dims) : half;
    i64 qTotal = (i64)tokens * heads * half, kTotal = (i64)tokens * kvHeads * kItems, kvd = (i64)kvHeads * headSize;
    i64 vTotal = store ? (i64)tokens * kvd : 0;
    for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < qTotal + kTotal + vTotal; idx += (i64)gridDim.x * blockDim.x)
    {
        if (idx < qTotal)
        {
            int i = (int)(idx % half);
            i64 th = idx / half;
            float* row = q + th * headSize;
            float c, s;
            rope_cos_sin(rowInfo[2 * (th / heads)], i, dims, freqBase, freqScale, factors, &c, &s);
            int a, b;
            rope_pair(i, dims, neox, &a, &b);
            float xa = row[a], xb = row[b];
            row[a] = xa * c - xb * s;
            row[b] = xb * c + xa * s;
        }
        else if (idx < qTotal + kTotal)
        {
            i64 j = idx - qTotal;
            int i = (int)(j % kItems);
            i64 th = j / kItems; // token * kvHeads + kv head
            int t = (int)(th / kvHeads), position = rowInfo[2 * t];
            float* row = k + th * headSize;
            i64 cacheRow = ((i64)rowInfo[2 * t + 1] + position) * kvd + (th - (i64)t * kvHeads) * headSize;
            if (i < half)
            {
                float c, s;
                rope_cos_sin(position, i, dims, freqBase, freqScale, factors, &c, &s);
                int a, b;
                rope_pair(i, dims, neox, &a, &b);
                float xa = row[a], xb = row[b];
                float ra = xa * c - xb * s, rb = xb * c + xa * s;
                row[a] = ra;
                row[b] = rb;
                if (!store) continue;
                store_cache(kCache, f16, cacheRow + a, ra);
                store_cache(kCache, f16, cacheRow + b, rb);
            }
            else
            {
                int e = dims + (i - half);
                store_cache(kCache, f16, cacheRow + e, row[e]);
            }
        }
        else
        {
            i64 j = idx - qTotal - kTotal;
            int t = (int)(j / kvd);
            store_cache(vCache, f16, ((i64)rowInfo[2 * t + 1] + rowInfo[2 * t]) * kvd + (j - (i64)t * kvd), v[j]);
        }
    }
}

// Attention for a multi-sequence batch: one block per (head, row); row t attends over cache rows rowInfo[2t + 1] ..
// rowInfo[2t + 1] + rowInfo[2t] (its own sequence, causal). No split: the rows of a batch give heads x rows blocks, enough
// to fill the device without splitting a history. With xq (headSize a multiple of 32) each block also quantizes its head's
// output for the output projection's int8 batch matmul, as write_head does for a decode token.
// Positions a warp of attention_rows scores per step (attend's P): a tuning define, 1 by default (a batch has heads x rows
// blocks to hide latency with, as a prompt does); 4 is the decode kernel's.
#ifndef ATTENTION_ROWS_P
#define ATTENTION_ROWS_P 1
#endif
template <int KV, int PL>
__device__ __forceinline__ void attention_rows(const float* q, const void* k, const void* v, float* out, const int* rowInfo, int heads,
                                               int kvHeads, int headSize, float scale, i8* xq, XScale* xs)
{
    __shared__ AttentionShared sh;
    int h = blockIdx.x, t = blockIdx.y;
    i64 o0 = ((i64)t * heads + h) * headSize, kvStride = (i64)kvHeads * headSize, slot = (i64)rowInfo[2 * t + 1] * kvStride;
    const void* ks = (const u8*)k + kv_bytes<KV>(slot);
    const void* vs = (const u8*)v + kv_bytes<KV>(slot);
    float mAll, factor[ATT_WARPS], denominator;
    attend<KV, ATTENTION_ROWS_P, PL>(q + o0, ks, vs, h / (heads / kvHeads), kvStride, headSize, scale, 0, rowInfo[2 * t] + 1, sh, &mAll, factor, &denominator);
    write_head(out + o0, headSize, o0, xq, xs, [&](int e) { return block_numerator(sh, factor, e) / denominator; });
}

#define ATTENTION_ROWS_KERNEL(name, KV, PL, BLOCKS)                                                                     \
    extern "C" __global__ void __launch_bounds__(ATTENTION_WARPS * 32, BLOCKS) name(const float* q, const void* k, const void* v, float* out, const int* rowInfo, \
                                    int heads, int kvHeads, int headSize, float scale, i8* xq, XScale* xs)              \
    { PDL_ENTRY(); attention_rows<KV, PL>(q, k, v, out, rowInfo, heads, kvHeads, headSize, scale, xq, xs); }

ATTENTION_ROWS_KERNEL(attention_rows_f32, T_F32, ATT_PER_LANE, 1)
ATTENTION_ROWS_KERNEL(attention_rows_f16, T_F16, ATT_PER_LANE, 1)
ATTENTION_ROWS_KERNEL(attention_rows_q8_0, T_Q8_0, ATT_PER_LANE, 1)
ATTENTION_ROWS_KERNEL(attention_rows_q4_0, T_Q4_0, ATT_PER_LANE, 1)
ATTENTION_ROWS_KERNEL(attention_rows_f32_h128, T_F32, 4, ATTENTION_H128_BLOCKS)
ATTENTION_ROWS_KERNEL(attention_rows_f16_h128, T_F16, 4, ATTENTION_H128_BLOCKS)
ATTENTION_ROWS_KERNEL(attention_rows_q8_0_h128, T_Q8_0, 4, ATTENTION_H128_BLOCKS)
ATTENTION_ROWS_KERNEL(attention_rows_q4_0_h128, T_Q4_0, 4, ATTENTION_H128_BLOCKS)

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

// y = silu(gate) * up. When xq is not null (n a multiple of 32), y is also quantized to 8-bit blocks for the down
// projection's mat-vec; blocks of 256 threads and a stride that is a multiple of 32 keep each warp on one whole block.
// When yh is not null, y is also written as f16 at yh (a prompt's down projection on cuBLAS reads it).
extern "C" __global__ void silu_mul(const float* gate, const float* up, float* y, i64 n, i8* xq, XScale* xs, u16* yh)
{
    PDL_SMALL_ENTRY();
    GRID_STRIDE(i, n)
    {
        float g = gate[i];
        float v = g / (1.f + expf(-g)) * up[i];
        y[i] = v;
        if (yh != 0) yh[i] = f2h(v);
        if (xq != 0) quantize_block32(v, threadIdx.x & 31, xq + (i & ~(i64)31), xs + (i >> 5));
    }
}

extern "C" __global__ void add(const float* a, const float* b, float* y, i64 n)
{
    PDL_SMALL_ENTRY();
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

extern "C" __global__ void add_bias(float* x, const float* bias, i64 total, int n)
{
    PDL_ENTRY();
    GRID_STRIDE(i, total) x[i] += bias[i % n];
}

extern "C" __global__ void copy_f32(const float* src, float* dst, i64 n)
{
    PDL_ENTRY();
    GRID_STRIDE(i, n) dst[i] = src[i];
}

extern "C" __global__ void convert_f32_f16(const float* src, u16* dst, i64 n)
{
    PDL_ENTRY();
    GRID_STRIDE(i, n) dst[i] = f2h(src[i]);
}

// ---- Q8_0 KV cache (docs/gpu-kernels.md#q8_0-kv-cache): K/V rows stored as GGUF Q8_0 blocks (34 bytes per 32 elements).

// Quantizes v (element `lane` of one 32-element block) into the Q8_0 block at dst (2-byte aligned): d = max|x| / 127 stored as
// f16, q = round(x / d) half to even, computed as x * (1 / d) with the unrounded d (as the CPU backend's cache quantizer and
// GGUF's Q8_0 quantizer do); every q is 0 when d is. The whole warp must call it (warp shuffles).
__device__ __forceinline__ void quantize_q8_0_block(float v, int lane, u8* dst)
{
    float amax = fabsf(v);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, lane_xor(amax, o));
    float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    dst[2 + lane] = (u8)__float2int_rn(v * id);
    if (lane == 0) *(u16*)dst = f2h(d);
}

// One Q4_0 block from a warp's 32 values (lane i holds element i), as the CPU's cache quantizer writes it (docs/gpu-kernels.md#q4_0-kv-cache):
// m = the element of largest magnitude with its sign (the lowest lane on ties; +0 when all are 0), d = m / -8, and
// q = min(15, (int)(x * (1/d) + 8.5)) with the unrounded d, product and sum rounded apart (no FMA), as the CPU computes them;
// element i in the low nibble of byte i (i < 16), element i + 16 in its high nibble.
__device__ __forceinline__ void quantize_q4_0_block(float v, int lane, u8* dst)
{
    float a = fabsf(v), m = v;
    int at = lane;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
    {
        float oa = lane_xor(a, o), om = lane_xor(m, o);
        int ot = lane_xor(at, o);
        if (oa > a || (oa == a && ot < at)) { a = oa; m = om; at = ot; }
    }
    if (a == 0.f) m = 0.f;
    float d = m / -8.f, id = d != 0.f ? 1.f / d : 0.f;
    int q = min(15, (int)__fadd_rn(__fmul_rn(v, id), 8.5f));
    int hi = lane_xor(q, 16);
    if (lane < 16) dst[2 + lane] = (u8)(q | (hi << 4));
    if (lane == 0) *(u16*)dst = f2h(d);
}

// The block quantizer of a cache type (its block's bytes: KvBlock).
template <int KV> struct CacheBlock;
template <> struct CacheBlock<T_Q8_0> : KvBlock<T_Q8_0>
{
    static __device__ __forceinline__ void quantize(float v, int lane, u8* dst) { quantize_q8_0_block(v, lane, dst); }
};
template <> struct CacheBlock<T_Q4_0> : KvBlock<T_Q4_0>
{
    static __device__ __forceinline__ void quantize(float v, int lane, u8* dst) { quantize_q4_0_block(v, lane, dst); }
};

// Convert to a Q8_0 or Q4_0 tensor: src [blocks * 32] F32 into `blocks` blocks at dst; one warp per block.
template <int KV>
__device__ __forceinline__ void convert_blocks(const float* src, u8* dst, i64 blocks)
{
    i64 b = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (b >= blocks) return; // whole warps in or out
    CacheBlock<KV>::quantize(src[b * 32 + lane], lane, dst + b * CacheBlock<KV>::Bytes);
}

// The cache store after rope_store_kv / rope_store_kv_rows with f16 = -1 (which rotate k in place and store nothing): k and v
// [tokens, kvd] (kvd a multiple of 32) quantized into the Q8_0 or Q4_0 caches at token t's row, firstPosition + t, or with
// rowInfo (a multi-sequence batch) rowInfo[2t + 1] + rowInfo[2t]. One warp per 32-element block: the first tokens * kvd / 32
// warps store k, the next as many v.
template <int KV>
__device__ __forceinline__ void store_kv_blocks(const float* k, const float* v, u8* kCache, u8* vCache, int tokens, int kvd, int firstPosition,
                                                const int* rowInfo)
{
    i64 w = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31, perRow = kvd >> 5;
    i64 blocks = (i64)tokens * perRow;
    if (w >= 2 * blocks) return; // whole warps in or out
    bool isV = w >= blocks;
    i64 j = isV ? w - blocks : w;
    int t = (int)(j / perRow), b = (int)(j - (i64)t * perRow);
    i64 row = rowInfo != 0 ? (i64)rowInfo[2 * t + 1] + rowInfo[2 * t] : (i64)firstPosition + t;
    CacheBlock<KV>::quantize((isV ? v : k)[j * 32 + lane], lane, (isV ? vCache : kCache) + (row * perRow + b) * CacheBlock<KV>::Bytes);
}

#define CACHE_BLOCK_KERNELS(name, KV)                                                                                   \
    extern "C" __global__ void convert_f32_##name(const float* src, u8* dst, i64 blocks)                               \
    { PDL_ENTRY(); convert_blocks<KV>(src, dst, blocks); }                                                             \
    extern "C" __global__ void store_kv_##name(const float* k, const float* v, u8* kCache, u8* vCache, int tokens, int kvd, \
                                               int firstPosition, const int* rowInfo)                                  \
    { PDL_SMALL_ENTRY(); store_kv_blocks<KV>(k, v, kCache, vCache, tokens, kvd, firstPosition, rowInfo); }

CACHE_BLOCK_KERNELS(q8_0, T_Q8_0)
CACHE_BLOCK_KERNELS(q4_0, T_Q4_0)

// ---------------------------------------------------------------------------------------------------------------
// Decode mat-vec with 8-bit activations (dp4a). The F32 mat-vec above is compute-bound on the H100 (every lane
// dequantizes 16 weights to float and reads 64 bytes of activations per 8-16 bytes of weights); here the activation
// row is quantized once to blocks of 32 int8 (scale d, and s = d * sum(q) for the zero-point terms), and each
// weight block is multiplied with 4-byte integer dot products.
// ---------------------------------------------------------------------------------------------------------------

// xq[b*32 + i] = round(x[b*32 + i] / d_b), xs[b] = { d_b, d_b * sum_i xq[b*32 + i] } with d_b = max|x| / 127 over
// block b; one warp per block of 32, `blocks` = tokens * cols / 32 (rows of x are whole blocks: quantized weight rows are).
extern "C" __global__ void quantize_x_q8(const float* x, i8* xq, XScale* xs, i64 blocks)
{
    PDL_SMALL_ENTRY();
    i64 b = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (b >= blocks) return;
    quantize_block32(x[b * 32 + lane], lane, xq + b * 32, xs + b);
}

// The 32 int8 activations of block `blk` as 8 words (16-byte aligned: blocks are 32 bytes from an aligned base).
__device__ __forceinline__ void load_xq32(const i8* xq, int blk, int* w)
{
    const U32x4* p = (const U32x4*)(xq + (i64)blk * 32);
    U32x4 a = p[0], b = p[1];
    w[0] = (int)a.x; w[1] = (int)a.y; w[2] = (int)a.z; w[3] = (int)a.w;
    w[4] = (int)b.x; w[5] = (int)b.y; w[6] = (int)b.z; w[7] = (int)b.w;
}

// Elements one lane handles per step ("unit") for each weight type: a Q4_0/Q8_0 block, half of a Q4_K
// 64-element pair of sub-blocks... see dot_unit.
template <int T> struct Unit { static const int Elems = 32; };
template <> struct Unit<T_Q4_K> { static const int Elems = 64; };

// 1 (default): the Q4_K unit reads its super-block's header (d, dmin, the 12 scale bytes) with one 16-byte load and its 32
// quant bytes with two, where the matrix is 16-aligned; 0: byte loads of the scales (docs/gpu-kernels.md#q4_k-decode-loads).
#ifndef Q4K_WIDE_LOADS
#define Q4K_WIDE_LOADS 1
#endif

// One unit of a weight row for the decode mat-vecs, in two steps: load issues the unit's weight loads into registers, dot
// unpacks them and takes the dot product with the quantized activations of one token. Apart, so that a mat-vec can issue
// its first units' loads before it waits for its predecessor (MATVEC_PRELOAD: the weights never depend on it) and do
// everything that needs a loaded value after; dot_unit does both. The primary template serves the plain types, which never
// take the unit path (row_dot and swiglu_q8 branch on IS_PLAIN) but are instantiated through it.
template <int T> struct WeightUnit
{
    __device__ __forceinline__ void load(const u8*, int) {}
    __device__ __forceinline__ float dot(int, const i8*, const XScale*) const { return 0.f; }
};

// Q4_0: 18-byte block: f16 d, 16 bytes of nibbles (low nibbles = elements 0..15, high = 16..31); value = d * (q - 8)
template <> struct WeightUnit<T_Q4_0>
{
    ScaledBlockWords<4> w;
    __device__ __forceinline__ void load(const u8* row, int u) { w.load(row + (i64)u * 18); }
    __device__ __forceinline__ float dot(int u, const i8* xq, const XScale* xs) const
    {
        u32 q[4];
        int x[8];
        float d = w.quants(q);
        load_xq32(xq, u, x);
        int s = 0;
#pragma unroll
        for (int k = 0; k < 4; k++)
        {
            s = dp4a((int)(q[k] & 0x0F0F0F0Fu), x[k], s);
            s = dp4a((int)((q[k] >> 4) & 0x0F0F0F0Fu), x[k + 4], s);
        }
        XScale a = xs[u];
        return d * (a.d * (float)s - 8.f * a.s);
    }
};

// Q8_0: 34-byte block: f16 d, 32 int8
template <> struct WeightUnit<T_Q8_0>
{
    ScaledBlockWords<8> w;
    __device__ __forceinline__ void load(const u8* row, int u) { w.load(row + (i64)u * 34); }
    __device__ __forceinline__ float dot(int u, const i8* xq, const XScale* xs) const
    {
        u32 q[8];
        int x[8];
        float d = w.quants(q);
        load_xq32(xq, u, x);
        int s = 0;
#pragma unroll
        for (int k = 0; k < 8; k++) s = dp4a((int)q[k], x[k], s);
        return d * xs[u].d * (float)s;
    }
};

// Q4_K: unit = pair p of a 144-byte super-block: 32 bytes of nibbles, low = sub-block 2p, high = sub-block 2p + 1;
// value = d * sc_j * q - dmin * m_j
template <> struct WeightUnit<T_Q4_K>
{
    u32 q[8];
    float d, dmin, sc0, m0, sc1, m1;
#if Q4K_WIDE_LOADS
    U32x4 head; // d | dmin << 16, then the 12 scale bytes; unpacked in dot
    bool wide;
#endif
    __device__ __forceinline__ void load(const u8* row, int u)
    {
        int sb = u >> 2, p = u & 3;
        const u8* b = row + (i64)sb * 144;
#if Q4K_WIDE_LOADS
        // Every super-block is 16-aligned when the row is (144 = 9 x 16). GpuBuffers' 32-byte alignment makes it so; the
        // test (the same for a whole matrix) keeps a misaligned one on the byte loads below rather than faulting.
        wide = (((unsigned long long)row) & 15) == 0;
        if (wide)
        {
            head = *(const U32x4*)b;
            U32x4 q0 = *(const U32x4*)(b + 16 + 32 * p), q1 = *(const U32x4*)(b + 32 + 32 * p);
            q[0] = q0.x; q[1] = q0.y; q[2] = q0.z; q[3] = q0.w; q[4] = q1.x; q[5] = q1.y; q[6] = q1.z; q[7] = q1.w;
            return;
        }
#endif
        scale_min_k4(2 * p, b + 4, &sc0, &m0);
        scale_min_k4(2 * p + 1, b + 4, &sc1, &m1);
        load16(b + 16 + 32 * p, q);
        load16(b + 32 + 32 * p, q + 4);
        d = ldh(b);
        dmin = ldh(b + 2);
    }
    __device__ __forceinline__ float dot(int u, const i8* xq, const XScale* xs)
    {
        int sb = u >> 2, p = u & 3;
#if Q4K_WIDE_LOADS
        if (wide)
        {
            scale_min_k4_words(2 * p, head.y, head.z, head.w, &sc0, &m0);
            scale_min_k4_words(2 * p + 1, head.y, head.z, head.w, &sc1, &m1);
            d = h2f((u16)(head.x & 0xFFFFu));
            dmin = h2f((u16)(head.x >> 16));
        }
#endif
        int xa = sb * 8 + 2 * p;
        int x[8], y[8];
        load_xq32(xq, xa, x);
        load_xq32(xq, xa + 1, y);
        int s0 = 0, s1 = 0;
#pragma unroll
        for (int k = 0; k < 8; k++)
        {
            s0 = dp4a((int)(q[k] & 0x0F0F0F0Fu), x[k], s0);
            s1 = dp4a((int)((q[k] >> 4) & 0x0F0F0F0Fu), y[k], s1);
        }
        XScale a0 = xs[xa], a1 = xs[xa + 1];
        return d * (sc0 * a0.d * (float)s0 + sc1 * a1.d * (float)s1) - dmin * (m0 * a0.s + m1 * a1.s);
    }
};

// Q6_K: unit = 32-element group k of a 210-byte super-block: half h = k / 4, group g = k % 4 within the half;
// q = (4 bits of ql) | (2 bits of qh) << 4 in 0..63, value = d * scale16 * (q - 32), one int8 scale per 16
template <> struct WeightUnit<T_Q6_K>
{
    A2Words<8> ql, qh; // super-blocks are 210 bytes: every other one is only 2-byte aligned
    int sc0, sc1;
    u16 d;
    __device__ __forceinline__ void load(const u8* row, int u)
    {
        int sb = u >> 3, k = u & 7, h = k >> 2, g = k & 3;
        const u8* b = row + (i64)sb * 210;
        ql.load(b + h * 64 + (g & 1) * 32);
        qh.load(b + 128 + h * 32);
        const i8* sc = (const i8*)(b + 192) + h * 8 + 2 * g;
        sc0 = sc[0];
        sc1 = sc[1];
        d = *(const u16*)(b + 208);
    }
    __device__ __forceinline__ float dot(int u, const i8* xq, const XScale* xs) const
    {
        int g = u & 3;
        u32 l[8], hi[8];
        int x[8];
        ql.words(l);
        qh.words(hi);
        load_xq32(xq, u, x);
        int shift = g >= 2 ? 4 : 0, hs = 2 * g;
        int sA = 0, sB = 0, oA = 0, oB = 0;
#pragma unroll
        for (int w = 0; w < 8; w++)
        {
            int qv = (int)(((l[w] >> shift) & 0x0F0F0F0Fu) | (((hi[w] >> hs) & 0x03030303u) << 4));
            if (w < 4) { sA = dp4a(qv, x[w], sA); oA = dp4a(0x01010101, x[w], oA); }
            else { sB = dp4a(qv, x[w], sB); oB = dp4a(0x01010101, x[w], oB); }
        }
        return h2f(d) * xs[u].d * ((float)sc0 * (float)(sA - 32 * oA) + (float)sc1 * (float)(sB - 32 * oB));
    }
};

// Dot product of unit u of a weight row with the quantized activations of one token.
template <int T>
__device__ __forceinline__ float dot_unit(const u8* row, int u, const i8* xq, const XScale* xs)
{
    WeightUnit<T> w;
    w.load(row, u);
    return w.dot(u, xq, xs);
}

// Up to three weights read by one mat-vec or mmq launch (q, k and v share their input rows; gate and up too): rows of
// target 0 first, then 1, then 2. firstBlock: mmq's first row block (blockIdx.x) of the target; the mat-vec ignores it.
// The host's MatVecTargets (backends/Gpu/Kernels/MatVecTargets.cs) has the same layout.
struct MatVecTarget { const u8* w; i64 rowBytes; float* y; int rows; int firstBlock; };
struct MatVecTargets { MatVecTarget t[3]; int count; int accumulate; };

// Which target row r (over the targets' rows in order) belongs to: its index, with *r made the row within it; -1 past the last.
__device__ __forceinline__ int matvec_target(const MatVecTargets& a, int* r)
{
    if (*r < a.t[0].rows) return 0;
    *r -= a.t[0].rows;
    if (a.count < 2) return -1;
    if (*r < a.t[1].rows) return 1;
    *r -= a.t[1].rows;
    return a.count < 3 || *r >= a.t[2].rows ? -1 : 2;
}

// Tuning knobs of the decode mat-vecs. Their defaults are the measured best; the `defines` option (environment
// PLUGINENGINE_CUDA_DEFINES, e.g. "MATVEC_UNROLL=8;MATVEC_MIN_BLOCKS=16") overrides them, so variants can be compared in
// one device session without a rebuild. MATVEC_MIN_BLOCKS > 0 asks the compiler for that many resident 128-thread blocks
// per SM (it then caps registers), 0 leaves it free.
#ifndef MATVEC_UNROLL
#define MATVEC_UNROLL 4
#endif
#ifndef SWIGLU_UNROLL
#define SWIGLU_UNROLL 2
#endif
#ifndef MATVEC_MIN_BLOCKS
#define MATVEC_MIN_BLOCKS 0
#endif
#if MATVEC_MIN_BLOCKS > 0
#define MATVEC_BOUNDS __launch_bounds__(128, MATVEC_MIN_BLOCKS)
#else
#define MATVEC_BOUNDS __launch_bounds__(128)
#endif

// Dot product of one weight row with the quantized activation row: lanes over units, then a warp sum (every lane gets it).
template <int T>
__device__ __forceinline__ float row_dot_q8(const u8* __restrict__ row, int cols, const i8* __restrict__ xq, const XScale* __restrict__ xs)
{
    int lane = threadIdx.x & 31, units = cols / Unit<T>::Elems;
    float acc = 0.f;
    UNROLL(MATVEC_UNROLL)
    for (int u = lane; u < units; u += 32) acc += dot_unit<T>(row, u, xq, xs);
    return warp_sum(acc);
}

// Plain (unquantized) weight types: their decode mat-vecs read x as F32, not as 8-bit blocks (docs/gpu-kernels.md#f16-decode).
#define IS_PLAIN(T) ((T) == T_F32 || (T) == T_F16 || (T) == T_BF16)

// Dot product of one plain-type weight row with an F32 activation row, summed exactly as matmul_rows<T, 1> sums it (16
// elements a lane per ROW_CHUNK chunk, then a warp sum), so a fused launch gives the unfused kernel's values.
template <int T>
__device__ __forceinline__ float row_dot_f32(const u8* __restrict__ row, int cols, const float* __restrict__ x)
{
    int lane = threadIdx.x & 31;
    float acc = 0.f;
    UNROLL(MATMUL_T1_UNROLL)
    for (int c0 = 0; c0 < cols; c0 += ROW_CHUNK)
    {
        int e0 = c0 + lane * LANE_ELEMS;
        float v[16], xv[16];
        deq16<T>(row, e0, cols, v);
        load_x16(x, e0, cols, xv);
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < 16; i++) s += v[i] * xv[i];
        acc += s;
    }
    return warp_sum(acc);
}

// MATVEC_PRELOAD=n > 0: the one-token mat-vecs of the quantized types (matvec_q8_*) issue the loads of each lane's first n
// units of weights before they wait for their predecessor (PDL_ENTRY), and unpack them and read the activations and the
// outputs after: the weights never depend on an earlier kernel, and a mat-vec that follows a small kernel is resident
// while that kernel runs (PDL_EARLY_TRIGGER). SWIGLU_PRELOAD=n: the same for swiglu_q8_* (n units of gate and of up).
// The units are summed in the same order either way, so the values are the same bits. 0: wait at entry
// (docs/gpu-kernels.md#decode-preload).
#ifndef MATVEC_PRELOAD
#define MATVEC_PRELOAD 0
#endif
#ifndef SWIGLU_PRELOAD
#define SWIGLU_PRELOAD 0
#endif
#define MATVEC_PRELOADS(T) (MATVEC_PRELOAD > 0 && !IS_PLAIN(T))
// The wait of a kernel whose entry skipped it (the matvec_ and swiglu_ kernels with preload) once its first weights are asked for.
#define PDL_ENTRY_AFTER_PRELOAD() PDL_ENTRY()
#define SWIGLU_PRELOADS(T) (SWIGLU_PRELOAD > 0 && !IS_PLAIN(T))

// row_dot_q8 for a kernel that has not waited for its predecessor yet (MATVEC_PRELOAD): the lane's first units are loaded,
// then PDL_ENTRY, then the sum runs over the same units in the same order as row_dot_q8's.
template <int T>
__device__ __forceinline__ float row_dot_q8_preloaded(const u8* __restrict__ row, int cols, const i8* __restrict__ xq, const XScale* __restrict__ xs)
{
    const int n = MATVEC_PRELOAD > 0 ? MATVEC_PRELOAD : 1;
    int lane = threadIdx.x & 31, units = cols / Unit<T>::Elems;
    WeightUnit<T> first[n];
#pragma unroll
    for (int i = 0; i < n; i++)
        if (lane + 32 * i < units) first[i].load(row, lane + 32 * i);
    PDL_ENTRY_AFTER_PRELOAD();
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < n; i++)
        if (lane + 32 * i < units) acc += first[i].dot(lane + 32 * i, xq, xs);
    UNROLL(MATVEC_UNROLL)
    for (int u = lane + 32 * n; u < units; u += 32) acc += dot_unit<T>(row, u, xq, xs);
    return warp_sum(acc);
}

// The row dot of the decode mat-vecs (matvec_*, swiglu_*, matvec_rope_*): xq is the 8-bit activation row and xs its block
// scales for quantized T; for plain T, xq is the F32 activation row itself and xs is not read.
template <int T>
__device__ __forceinline__ float row_dot(const u8* __restrict__ row, int cols, const i8* __restrict__ xq, const XScale* __restrict__ xs)
{
    if (IS_PLAIN(T)) return row_dot_f32<T>(row, cols, (const float*)xq);
    return row_dot_q8<T>(row, cols, xq, xs);
}

// y_i[r] (+)= sum_c w_i[r, c] * x[c] for the targets of `a`, x quantized by quantize_x_q8 (or by the op that wrote
// it), or x itself for plain T (row_dot): one warp per weight row (4 per block) over the targets' rows in order. accumulate = 1 adds into y (the residual
// stream), else y is overwritten. Rows are whole units, so nothing is read past a row: no slide needed here.
// Measured slower on an H200 under Nsight Compute (7B output and down projections, 6.9 and 12.5 us this way): two warps
// per row, their sums added in the block (8.9 and 16.4 us); one warp reading two rows per unit of activations, which
// shares the activation loads (8.0 and 15.3 us; tg128 462 against 513 t/s).
template <int T>
__device__ __forceinline__ void matvec_q8(const MatVecTargets& a, int cols, const i8* xq, const XScale* xs)
{
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), target = matvec_target(a, &r);
    if (target < 0) return;
    const MatVecTarget& t = a.t[target];
    const u8* row = t.w + (i64)r * t.rowBytes;
    float acc = MATVEC_PRELOADS(T) ? row_dot_q8_preloaded<T>(row, cols, xq, xs) : row_dot<T>(row, cols, xq, xs);
    if ((threadIdx.x & 31) == 0) t.y[r] = a.accumulate ? t.y[r] + acc : acc;
}

// The epilogue of the decode q/k/v mat-vec (matvec_rope_*): RoPE and the cache store of rope_store_kv done on the
// outputs as they are made, one launch less per layer (docs/gpu-kernels.md#decode-launches). One token at `position`,
// normal (adjacent-pair) RoPE only: rows 2i and 2i + 1 of a head are warps 2j and 2j + 1 of one block, which swap their
// sums through shared memory. roles: 2 bits per target, ROPE_OUTPUT (y only), ROPE_ROTATE (q), ROPE_ROTATE_STORE_K (k),
// ROPE_STORE_V (v). kCache and vCache point at the token's cache row. The host's RopeStore
// (backends/Gpu/Kernels/RopeStore.cs) has the same layout.
#define ROPE_OUTPUT 0
#define ROPE_ROTATE 1
#define ROPE_ROTATE_STORE_K 2
#define ROPE_STORE_V 3
struct RopeStore { void* kCache; void* vCache; const float* factors; int f16; int position; int headSize; int dims; float freqBase; float freqScale; int roles; int unused; };

template <int T>
__device__ __forceinline__ void matvec_rope_q8(const MatVecTargets& a, int cols, const i8* xq, const XScale* xs, const RopeStore& e)
{
    __shared__ float sums[4]; // blockDim 128: one per warp
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * 4 + warp, target = matvec_target(a, &r);
    float acc = 0.f;
    if (target >= 0) acc = row_dot<T>(a.t[target].w + (i64)r * a.t[target].rowBytes, cols, xq, xs);
    if (lane == 0) sums[warp] = acc;
    __syncthreads(); // every warp reaches this: rows past the last target only hold no sum
    if (target < 0 || lane != 0) return;
    int role = (e.roles >> (2 * target)) & 3, inHead = r % e.headSize;
    float value = acc;
    if (role != ROPE_OUTPUT && role != ROPE_STORE_V && inHead < e.dims)
    {
        float partner = sums[warp ^ 1], c, s;
        rope_cos_sin(e.position, inHead >> 1, e.dims, e.freqBase, e.freqScale, e.factors, &c, &s);
        value = (inHead & 1) ? acc * c + partner * s : acc * c - partner * s; // as rope: b' = b c + a s, a' = a c - b s
    }
    a.t[target].y[r] = value;
    if (role == ROPE_ROTATE_STORE_K) store_cache(e.kCache, e.f16, r, value);
    else if (role == ROPE_STORE_V) store_cache(e.vCache, e.f16, r, value);
}

// gate[r] = silu(wg[r, :] . x) * (wu[r, :] . x) for one token, the SwiGLU input of the down projection: one warp per
// row as matvec_q8, both rows' units in one loop.
// When yq is not null (rows a multiple of 32, blockDim 128), y is also quantized to 8-bit blocks for the down projection's
// mat-vec, saving a quantize_x_q8 launch: the last of the 8 blocks that write a 32-row group to finish (tickets[group]
// counts them, then is reset to 0 for the next launch) quantizes the group from y. (Quantizing the 32 outputs of one
// 1024-thread block instead was measured slower on an H200, 385 against 403 t/s for the 7B shape: such blocks fill the
// SMs worse; docs/gpu-kernels.md#decode-launches.)
template <int T>
__device__ __forceinline__ void swiglu_q8(const u8* wg, const u8* wu, i64 rowBytes, int rows, int cols, const i8* xq, const XScale* xs, float* y,
                                          i8* yq, XScale* ys, int* tickets)
{
    int lane = threadIdx.x & 31;
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r < rows)
    {
        const u8* gRow = wg + (i64)r * rowBytes;
        const u8* uRow = wu + (i64)r * rowBytes;
        float g = 0.f, u = 0.f;
        if (IS_PLAIN(T)) // x in F32 (xq is the row): each row as the plain mat-vec reads it
        {
            g = row_dot<T>(gRow, cols, xq, xs);
            u = row_dot<T>(uRow, cols, xq, xs);
        }
        else
        {
            int units = cols / Unit<T>::Elems, k0 = lane;
            if (SWIGLU_PRELOADS(T))
            {
                const int n = SWIGLU_PRELOAD > 0 ? SWIGLU_PRELOAD : 1;
                WeightUnit<T> fg[n], fu[n];
#pragma unroll
                for (int i = 0; i < n; i++)
                    if (lane + 32 * i < units) { fg[i].load(gRow, lane + 32 * i); fu[i].load(uRow, lane + 32 * i); }
                PDL_ENTRY_AFTER_PRELOAD();
#pragma unroll
                for (int i = 0; i < n; i++)
                    if (lane + 32 * i < units) { g += fg[i].dot(lane + 32 * i, xq, xs); u += fu[i].dot(lane + 32 * i, xq, xs); }
                k0 = lane + 32 * n;
            }
            UNROLL(SWIGLU_UNROLL)
            for (int k = k0; k < units; k += 32)
            {
                g += dot_unit<T>(gRow, k, xq, xs);
                u += dot_unit<T>(uRow, k, xq, xs);
            }
            g = warp_sum(g);
            u = warp_sum(u);
        }
        if (lane == 0) y[r] = g / (1.f + expf(-g)) * u;
    }
    else if (SWIGLU_PRELOADS(T)) PDL_ENTRY_AFTER_PRELOAD(); // a warp past the last row still takes a ticket below
    if (yq == 0) return;
    __shared__ int isLast;
    int group = (blockIdx.x * (blockDim.x >> 5)) >> 5, blocksPerGroup = 32 / (blockDim.x >> 5);
    __threadfence();   // this block's outputs are visible device-wide before its ticket is taken
    __syncthreads();
    if (threadIdx.x == 0) isLast = atomicAdd(tickets + group, 1) == blocksPerGroup - 1;
    __syncthreads();
    if (!isLast || threadIdx.x >= 32) return;
    __threadfence();
    quantize_block32(load_cg(y + (i64)group * 32 + lane), lane, yq + (i64)group * 32, ys + group);
    if (lane == 0) tickets[group] = 0;
}

// Small batches (2 .. 31 tokens: several sequences decoding together, a short prompt chunk; docs/batching.md):
// y[t, r] (+)= sum_c w[r, c] * x[t, c] with every token's row of x quantized by quantize_x_q8 (xq/xs hold `tokens` rows of
// cols/32 blocks each). One warp per weight row as matvec_q8; each block's warps take MATMUL_Q8_TOKENS tokens (grid y =
// token groups), so a weight unit is read from memory once per group and its products with the group's tokens use the
// integer dot products. accumulate = 1 adds into y. Rows are whole units: nothing is read past a row.
#ifndef MATMUL_Q8_TOKENS
#error "MATMUL_Q8_TOKENS must be defined by the host"
#endif
template <int T>
__device__ __forceinline__ void matmul_q8(const u8* __restrict__ w, i64 rowBytes, int rows, int cols, const i8* __restrict__ xq,
                                          const XScale* __restrict__ xs, float* y, int tokens, int accumulate)
{
    int lane = threadIdx.x & 31;
    int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= rows) return;
    int t0 = blockIdx.y * MATMUL_Q8_TOKENS, units = cols / Unit<T>::Elems, blocksPerRow = cols >> 5;
    int nt = min(MATMUL_Q8_TOKENS, tokens - t0);
    const u8* row = w + (i64)r * rowBytes;
    float acc[MATMUL_Q8_TOKENS];
#pragma unroll
    for (int t = 0; t < MATMUL_Q8_TOKENS; t++) acc[t] = 0.f;
    for (int u = lane; u < units; u += 32)
    {
#pragma unroll
        for (int t = 0; t < MATMUL_Q8_TOKENS; t++)
        {
            if (t >= nt) break;
            i64 tb = (i64)(t0 + t) * blocksPerRow;
            acc[t] += dot_unit<T>(row, u, xq + tb * 32, xs + tb);
        }
    }
#pragma unroll
    for (int t = 0; t < MATMUL_Q8_TOKENS; t++)
    {
        if (t >= nt) break;
        float sum = warp_sum(acc[t]);
        if (lane == 0)
        {
            float* out = y + (i64)(t0 + t) * rows + r;
            *out = accumulate ? *out + sum : sum;
        }
    }
}

// The one-token decode kernels of a weight type: matvec_<k>, swiglu_<k> and matvec_rope_<k>, with <k> = q8_<type> for the
// quantized types (8-bit activations) and <type> for the plain ones (F32 activations, passed as xq).
#define MATVEC_KERNELS(k, T)                                                                                           \
    extern "C" __global__ void MATVEC_BOUNDS matvec_##k(MatVecTargets a, int cols, const i8* xq, const XScale* xs)     \
    { if (!MATVEC_PRELOADS(T)) PDL_ENTRY(); /* else after the first weight loads */ matvec_q8<T>(a, cols, xq, xs); } \
    extern "C" __global__ void MATVEC_BOUNDS swiglu_##k(const u8* wg, const u8* wu, i64 rowBytes, int rows, int cols,  \
                                                        const i8* xq, const XScale* xs, float* y, i8* yq, XScale* ys, int* tickets) \
    { if (!SWIGLU_PRELOADS(T)) PDL_ENTRY(); swiglu_q8<T>(wg, wu, rowBytes, rows, cols, xq, xs, y, yq, ys, tickets); } \
    extern "C" __global__ void MATVEC_BOUNDS matvec_rope_##k(MatVecTargets a, int cols, const i8* xq, const XScale* xs, RopeStore e) \
    { PDL_ENTRY(); matvec_rope_q8<T>(a, cols, xq, xs, e); }

#define MATVEC_Q8_KERNEL(name, T)                                                                                      \
    MATVEC_KERNELS(q8_##name, T)                                                                                       \
    extern "C" __global__ void MATVEC_BOUNDS matmul_q8_##name(const u8* w, i64 rowBytes, int rows, int cols, const i8* xq, \
                                                                       const XScale* xs, float* y, int tokens, int accumulate) \
    { PDL_ENTRY(); matmul_q8<T>(w, rowBytes, rows, cols, xq, xs, y, tokens, accumulate); }

MATVEC_Q8_KERNEL(q4_0, T_Q4_0)
MATVEC_Q8_KERNEL(q8_0, T_Q8_0)
MATVEC_Q8_KERNEL(q4_k, T_Q4_K)
MATVEC_Q8_KERNEL(q6_k, T_Q6_K)
MATVEC_KERNELS(f32, T_F32)
MATVEC_KERNELS(f16, T_F16)
MATVEC_KERNELS(bf16, T_BF16)

// ---------------------------------------------------------------------------------------------------------------
// Q4_0 weights in the tiled device layout (docs/gpu-kernels.md#tiled-q4_0-weights). The CUDA plugin keeps a copy of each
// Q4_0 matrix whose rows are a multiple of 8 and whose row length is a multiple of 128 that reaches the mmq kernels,
// rearranged so that a warp reads its 8-row tile's next 4 blocks as 512 contiguous bytes, one 16-byte load per lane, plus
// one 16-byte load of scales, where the GGUF layout's 18-byte blocks take three loads a block. Row group R = rows 8R .. 8R+7, block group B = blocks
// 4B .. 4B+3 (128 elements), G = cols / 128 groups per row, lane = 4g + q:
//   quants at (R * G + B) * 512 + 16 * lane + 4b: word q (bytes 4q .. 4q+3) of block 4B + b of row 8R + g, whose low
//          nibbles are elements 4q .. 4q+3 and high nibbles 16+4q .. 16+4q+3: exactly mma.m16n8k32's B words b0, b1 of
//          lane (g, q);
//   scales at rows * cols / 2 + (R * G + B) * 64 + 16p + 4b + 2h: the f16 d of block 4B + b of row 8R + 2p + h (a lane with
//          quad q finds the scales of its mma rows 2q and 2q + 1 in 16 bytes).
// The same 18 bytes per 32 elements as the GGUF layout. The original stays where it is (get_rows, the one-token mat-vecs,
// the cuBLAS prompt path and the host read it), so every other kernel is unchanged. (Mat-vecs on this layout were tried and
// were slower than on the GGUF bytes: docs/gpu-kernels.md#tiled-q4_0-weights.)
// ---------------------------------------------------------------------------------------------------------------
#ifndef TQ_GROUP
#error "TQ_GROUP (elements per block group) must be defined by the host"
#endif
__device__ __forceinline__ i64 tq_scales_at(int rows, int cols) { return (i64)rows * (cols >> 1); }

// dst (tiled) from src (GGUF rows of rowBytes): one thread per (row group, block group, lane).
extern "C" __global__ void tile_q4_0(const u8* __restrict__ src, i64 rowBytes, int rows, int cols, u8* __restrict__ dst)
{
    PDL_ENTRY();
    int groups = cols / TQ_GROUP;
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)(rows >> 3) * groups * 32) return;
    int lane = (int)(i & 31), g = lane >> 2, q = lane & 3;
    i64 rb = i >> 5;
    int R = (int)(rb / groups), B = (int)(rb - (i64)R * groups);
    const u8* row = src + (i64)(8 * R + g) * rowBytes;
    u32 w[4];
#pragma unroll
    for (int b = 0; b < 4; b++)
    {
        const u16* blk = (const u16*)(row + (i64)(4 * B + b) * 18); // 18-byte blocks: 2-byte aligned
        w[b] = (u32)blk[1 + 2 * q] | ((u32)blk[2 + 2 * q] << 16);
    }
    U32x4 v; v.x = w[0]; v.y = w[1]; v.z = w[2]; v.w = w[3];
    *(U32x4*)(dst + rb * 512 + 16 * lane) = v;
    if (q == 0)
    {
        u16* s = (u16*)(dst + tq_scales_at(rows, cols) + rb * 64);
#pragma unroll
        for (int b = 0; b < 4; b++) s[8 * (g >> 1) + 2 * b + (g & 1)] = *(const u16*)(row + (i64)(4 * B + b) * 18);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Batches on the tensor cores (docs/gpu-kernels.md#int8-tensor-core-matmuls-mmq): int8 mma on the quantized weights as they are stored and
// the activations quantized per token by quantize_x_q8, no dequantized copy of the weights. CUDA sm_80 and later only
// (the host launches these nowhere else; elsewhere they compile to nothing).
//
// y[t, r] (+)= sum_c w[r, c] * x[t, c]. One mma.m16n8k32.s8.s8 multiplies one 32-element block of 16 tokens (A, rows of
// xq) with the same block of 8 weight rows (B, the block's quants as signed int8: Q4_0 q - 8, Q8_0 as stored, Q4_K's
// unsigned 4-bit values): exact int32 block sums, then per (token, row) acc += (d_x * d_w) * sum in float (Q4_K also
// subtracts its min term, dmin_r * m_j * s_x with s_x = d_x * sum q_x).
// A block of threads: MMQ_KSPLIT warps, all over the same MMQ_ROWS weight rows and MT * 16 tokens, warp w over the w-th
// contiguous slice of the row's blocks (more warps in flight than rows / MMQ_ROWS alone gives, and each warp reads its
// rows' bytes in order); the warps' partial sums are added in warp order through shared memory (deterministic), then
// written. Grid: x = row tiles, y = token groups of MT * 16, z = K slices ("splits"): with z > 1 the gridDim.z blocks of a
// tile each take a contiguous z-th of the row (so a 4096-row matrix fills more than 128 blocks' worth of the GPU), write
// their tile to partials[tile][z], and the last of them to finish (tickets[tile] counts, then is reset to 0) adds the
// slices in z order and writes y. The slices depend on cols and gridDim.z only, never on the tokens, so a token's sums do
// not depend on the rest of its batch (docs/gpu-kernels.md#batch-invariance).
//
// Fragments (PTX ISA, mma.m16n8k32 with .s8): lane = 4 * g + q. A: a0 = token g, elements 4q..4q+3 of the block; a1 = token
// g + 8, same elements; a2, a3 = the same for elements 16 + 4q ..; B: b0 = weight row g, elements 4q..4q+3; b1 = row g,
// elements 16 + 4q ..; C: c0, c1 = token g, rows 2q and 2q + 1; c2, c3 = token g + 8, rows 2q and 2q + 1.
// ---------------------------------------------------------------------------------------------------------------
#ifndef MMQ_KSPLIT
#error "MMQ_KSPLIT (warps per block) must be defined by the host"
#endif
#ifndef MMQ_ROWS
#error "MMQ_ROWS (weight rows per block) must be defined by the host"
#endif
#define MMQ_TILES (MMQ_ROWS / 8) // 8-row mma tiles per block (MMQ_ROWS: 8, 16 or 32)
#ifndef MMQ_UNROLL
#define MMQ_UNROLL 2
#endif
// Steps ahead at which lane 0 of each row's group asks L2 for that row's weight bytes (0: no prefetch). A warp's slice is
// short (a 4096-wide row: 16 steps per warp), so each step's loads otherwise wait a full memory latency.
// 8 measured best on an H200 (7B Q4_0, 16 sequences decoding together: 2,091 t/s against 1,849 with none) before the K split
// and the register cap; with them 16 on an H100 (2,204 against 2,083 at 8).
#ifndef MMQ_PREFETCH
#define MMQ_PREFETCH 16
#endif
// Q4_K's distance (16 took its one-tile kernel from 104 to 139 registers, one block per SM fewer).
#ifndef MMQ_PREFETCH_Q4_K
#define MMQ_PREFETCH_Q4_K 8
#endif
// 1: the block stages its rows' bytes in shared memory (cp.async, several chunks in flight) and the warps multiply from
// there (mmq_staged below); 0: every lane loads its weight words from global memory as it goes.
#ifndef MMQ_STAGED
#define MMQ_STAGED 0
#endif
// Block groups (128 elements) ahead at which the tiled Q4_0 kernels ask L2 for their rows' bytes (0: no prefetch).
#ifndef MMQ_TILED_PREFETCH
#define MMQ_TILED_PREFETCH 4
#endif
#ifndef MMQ_TILED_UNROLL
#define MMQ_TILED_UNROLL 1
#endif
// Blocks per SM the compiler must leave room for in the one-tile Q4_0 and Q8_0 kernels (__launch_bounds__' second argument;
// 1: no register cap). Uncapped they take 98-128 registers a thread, so two 256-thread blocks fit an SM; 3 caps them at 80
// without spilling (the two- and four-tile kernels and Q4_K would spill, so they stay uncapped). Measured on an H100 (7B Q4_0,
// 16 sequences): 1,912 t/s uncapped, 2,083 at 3, 1,908 at 4.
#ifndef MMQ_MIN_BLOCKS
#define MMQ_MIN_BLOCKS 3
#endif

#if defined(PE_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define PE_INT8_MMA 1

// Four unsigned 4-bit values (one per byte, 0..15) as signed int8 v - 8.
__device__ __forceinline__ u32 nibbles_minus8(u32 v) { return ((v | 0x80808080u) - 0x08080808u) ^ 0x80808080u; }

__device__ __forceinline__ void mma_s8(const u32 (&a)[4], u32 b0, u32 b1, int (&c)[4])
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};"
                 : "=r"(c[0]), "=r"(c[1]), "=r"(c[2]), "=r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0), "r"(0), "r"(0), "r"(0));
}

// The value lane 4 * g (any lane of group g) holds, for row g of the tile.
__device__ __forceinline__ float from_group(float v, int g) { return __shfl_sync(0xffffffffu, v, 4 * g); }

// Weight sub-blocks per "step" of a type: Q4_0/Q8_0 one 32-element block; Q4_K one 64-element pair of sub-blocks
// (the low and high nibbles of the same 32 bytes), two mma each.
// Bytes is a step's share of a row: Q4_0 and Q8_0 one block; Q4_K a quarter of its 144-byte super-block.
template <int T> struct MmaStep
{
    static const int Elems = T == T_Q4_K ? 64 : 32;
    static const int Bytes = T == T_Q4_0 ? 18 : T == T_Q8_0 ? 34 : 36;
};

// One step of one 8-row tile: acc[m][k] for the MT m-tiles of tokens. `row` is this lane's weight row (g) of the tile;
// xa[m] the A fragments of the step's first (Q4_K: two) 32-element blocks, dx[m][0..1] their tokens' d (tokens g, g + 8),
// sx likewise d * sum q (Q4_K's min term).
template <int T, int MT>
__device__ __forceinline__ void mmq_step(const u8* row, int step, int q, int g,
                                         const u32 (&xa)[MT][2][4], const float (&dx)[MT][2][2], const float (&sx)[MT][2][2],
                                         float (&acc)[MT][4])
{
    if (T == T_Q4_0 || T == T_Q8_0)
    {
        u32 b0, b1;
        float d;
        if (T == T_Q4_0)
        {
            const u8* blk = row + (i64)step * MmaStep<T>::Bytes;
            u32 w;
            load_a2<1>(blk + 2 + 4 * q, &w);
            b0 = nibbles_minus8(w & 0x0F0F0F0Fu);
            b1 = nibbles_minus8((w >> 4) & 0x0F0F0F0Fu);
            d = ldh(blk);
        }
        else
        {
            const u8* blk = row + (i64)step * MmaStep<T>::Bytes;
            load_a2<1>(blk + 2 + 4 * q, &b0);
            load_a2<1>(blk + 18 + 4 * q, &b1);
            d = ldh(blk);
        }
        float d0 = from_group(d, 2 * q), d1 = from_group(d, 2 * q + 1); // rows 2q, 2q + 1 of the tile
#pragma unroll
        for (int m = 0; m < MT; m++)
        {
            int c[4];
            mma_s8(xa[m][0], b0, b1, c);
            acc[m][0] += (float)c[0] * (dx[m][0][0] * d0);
            acc[m][1] += (float)c[1] * (dx[m][0][0] * d1);
            acc[m][2] += (float)c[2] * (dx[m][0][1] * d0);
            acc[m][3] += (float)c[3] * (dx[m][0][1] * d1);
        }
    }
    else // T_Q4_K: step = pair p of super-block sb; sub-block 2p in the low nibbles of 32 bytes, 2p + 1 in the high
    {
        int sb = step >> 2, p = step & 3;
        const u8* b = row + (i64)sb * 144;
        u32 w0 = *(const u32*)(b + 16 + 32 * p + 4 * q);      // super-blocks are 144 bytes: 16-aligned rows keep these 4-aligned
        u32 w1 = *(const u32*)(b + 16 + 32 * p + 16 + 4 * q);
        float sc0, m0, sc1, m1;
        scale_min_k4(2 * p, b + 4, &sc0, &m0);
        scale_min_k4(2 * p + 1, b + 4, &sc1, &m1);
        float d = ldh(b), dmin = ldh(b + 2);
        float ds[2] = { d * sc0, d * sc1 }, dm[2] = { dmin * m0, dmin * m1 };
        u32 lo0 = w0 & 0x0F0F0F0Fu, lo1 = w1 & 0x0F0F0F0Fu, hi0 = (w0 >> 4) & 0x0F0F0F0Fu, hi1 = (w1 >> 4) & 0x0F0F0F0Fu;
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            float s0 = from_group(ds[h], 2 * q), s1 = from_group(ds[h], 2 * q + 1);
            float n0 = from_group(dm[h], 2 * q), n1 = from_group(dm[h], 2 * q + 1);
#pragma unroll
            for (int m = 0; m < MT; m++)
            {
                int c[4];
                mma_s8(xa[m][h], h ? hi0 : lo0, h ? hi1 : lo1, c);
                acc[m][0] += (float)c[0] * (dx[m][h][0] * s0) - n0 * sx[m][h][0];
                acc[m][1] += (float)c[1] * (dx[m][h][0] * s1) - n1 * sx[m][h][0];
                acc[m][2] += (float)c[2] * (dx[m][h][1] * s0) - n0 * sx[m][h][1];
                acc[m][3] += (float)c[3] * (dx[m][h][1] * s1) - n1 * sx[m][h][1];
            }
        }
    }
}
#endif

#if defined(PE_INT8_MMA)
// The A fragments of step s for this lane (tokens g and g + 8 of each m-tile; Q4_K: both 32-element blocks of the step) and
// their tokens' d and d * sum q.
template <int T, int MT>
__device__ __forceinline__ void mmq_load_x(const i8* const (&xrow)[MT][2], const XScale* const (&srow)[MT][2], int s, int q,
                                           u32 (&xa)[MT][2][4], float (&dx)[MT][2][2], float (&sx)[MT][2][2])
{
    const int subs = MmaStep<T>::Elems / 32;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int h = 0; h < subs; h++)
        {
            int blk = s * subs + h;
#pragma unroll
            for (int i = 0; i < 2; i++)
            {
                const u32* xw = (const u32*)(xrow[m][i] + (i64)blk * 32);
                xa[m][h][i] = xw[q];         // elements 4q ..
                xa[m][h][2 + i] = xw[4 + q]; // elements 16 + 4q ..
                XScale a = srow[m][i][blk];
                dx[m][h][i] = a.d;
                sx[m][h][i] = a.s;
            }
        }
}

// The staged form. Each pass the block copies one chunk of its MMQ_ROWS rows — MMQ_CHUNK_STEPS steps of every row, a whole
// number of 16-byte pieces — into shared memory with cp.async, MmqStages<T> chunks in flight, so the whole block keeps
// tens of kilobytes of loads outstanding where the direct form has one step per warp. Warp w multiplies steps 2w and
// 2w + 1 of every chunk, always in that order, so a token's sums do not depend on the others in its tile (batch
// invariance). Needs 16-byte aligned rows and chunks (cols a multiple of 256; the caller checks).
#define MMQ_CHUNK_STEPS (2 * MMQ_KSPLIT)
template <int T> struct MmqStaging
{
    static const int RowChunkBytes = MMQ_CHUNK_STEPS * MmaStep<T>::Bytes;
    static const int ChunkBytes = MMQ_ROWS * RowChunkBytes;
    static const int Stages = ChunkBytes * 4 <= 40 * 1024 ? 4 : ChunkBytes * 3 <= 40 * 1024 ? 3 : 2; // static shared memory stays under 48 KiB
};

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem)
{
    unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

template <int T, int MT>
__device__ __forceinline__ void mmq_staged(const u8* __restrict__ w, i64 rowBytes, int rows, int steps, int r0, int warp, int q, int g,
                                           const i8* const (&xrow)[MT][2], const XScale* const (&srow)[MT][2], float (&acc)[MMQ_TILES][MT][4])
{
    typedef MmqStaging<T> S;
    __shared__ __align__(16) u8 stage[S::Stages * S::ChunkBytes];
    int chunks = (steps + MMQ_CHUNK_STEPS - 1) / MMQ_CHUNK_STEPS;
    auto issue = [&](int c) {
        if (c < chunks)
        {
            int n = min(MMQ_CHUNK_STEPS, steps - c * MMQ_CHUNK_STEPS), pieces = n * MmaStep<T>::Bytes / 16;
            u8* dst = stage + (c % S::Stages) * S::ChunkBytes;
            for (int i = threadIdx.x; i < MMQ_ROWS * pieces; i += blockDim.x)
            {
                int r = i / pieces, k = i - r * pieces;
                const u8* src = w + (i64)min(r0 + r, rows - 1) * rowBytes + (i64)c * S::RowChunkBytes + 16 * k;
                cp_async16(dst + r * S::RowChunkBytes + 16 * k, src);
            }
        }
        cp_async_commit(); // an empty group past the end keeps the wait count below uniform
    };
#pragma unroll
    for (int c = 0; c < S::Stages - 1; c++) issue(c);
    for (int c = 0; c < chunks; c++)
    {
        issue(c + S::Stages - 1);
        cp_async_wait<S::Stages - 1>(); // chunk c has landed (for this thread's copies) ...
        __syncthreads();                // ... and for everyone's
        const u8* base = stage + (c % S::Stages) * S::ChunkBytes;
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            int ls = 2 * warp + h, s = c * MMQ_CHUNK_STEPS + ls;
            if (s >= steps) break;
            u32 xa[MT][2][4];
            float dx[MT][2][2], sx[MT][2][2];
            mmq_load_x<T, MT>(xrow, srow, s, q, xa, dx, sx);
#pragma unroll
            for (int j = 0; j < MMQ_TILES; j++) mmq_step<T, MT>(base + (8 * j + g) * S::RowChunkBytes, ls, q, g, xa, dx, sx, acc[j]);
        }
        __syncthreads(); // every warp is done with this stage before a later issue() refills it
    }
}
#endif

#if defined(PE_INT8_MMA)
// The steps of block groups [b0, b1) of Q4_0 weights in the tiled layout (above tile_q4_0): per group and 8-row tile one 16-byte
// load of this lane's B words for the group's 4 blocks and one of its rows' scales, where the GGUF layout takes three loads a
// block. Same products and the same order of additions per (token, row) as the block-by-block loop over those blocks.
template <int MT>
__device__ __forceinline__ void mmq_tiled_q4_0(const u8* __restrict__ w, int rows, int cols, int r0, int b0, int b1, int lane, int q,
                                               const i8* const (&xrow)[MT][2], const XScale* const (&srow)[MT][2], float (&acc)[MMQ_TILES][MT][4])
{
    int groups = cols / TQ_GROUP, lastGroup = (rows >> 3) - 1;
    const u8* scales = w + tq_scales_at(rows, cols);
    i64 tileAt[MMQ_TILES]; // (R * groups) of each tile's row group (clamped to the last: its results are not written)
#pragma unroll
    for (int j = 0; j < MMQ_TILES; j++) tileAt[j] = (i64)min((r0 >> 3) + j, lastGroup) * groups;
    UNROLL(MMQ_TILED_UNROLL)
    for (int B = b0; B < b1; B++)
    {
        if (MMQ_TILED_PREFETCH > 0 && (lane & 7) == 0 && B + MMQ_TILED_PREFETCH < b1)
#pragma unroll
            for (int j = 0; j < MMQ_TILES; j++) asm volatile("prefetch.global.L2 [%0];" ::"l"(w + (tileAt[j] + B + MMQ_TILED_PREFETCH) * 512 + 16 * lane));
        U32x4 wq[MMQ_TILES], ws[MMQ_TILES];
#pragma unroll
        for (int j = 0; j < MMQ_TILES; j++)
        {
            wq[j] = *(const U32x4*)(w + (tileAt[j] + B) * 512 + 16 * lane);
            ws[j] = *(const U32x4*)(scales + (tileAt[j] + B) * 64 + 16 * q);
        }
#pragma unroll
        for (int b = 0; b < 4; b++)
        {
            u32 xa[MT][2][4];
            float dx[MT][2][2], sx[MT][2][2];
            mmq_load_x<T_Q4_0, MT>(xrow, srow, 4 * B + b, q, xa, dx, sx);
#pragma unroll
            for (int j = 0; j < MMQ_TILES; j++)
            {
                u32 word = b == 0 ? wq[j].x : b == 1 ? wq[j].y : b == 2 ? wq[j].z : wq[j].w;
                u32 sw = b == 0 ? ws[j].x : b == 1 ? ws[j].y : b == 2 ? ws[j].z : ws[j].w;
                u32 b0w = nibbles_minus8(word & 0x0F0F0F0Fu), b1w = nibbles_minus8((word >> 4) & 0x0F0F0F0Fu);
                float d0 = h2f((u16)sw), d1 = h2f((u16)(sw >> 16)); // rows 2q, 2q + 1 of the tile
#pragma unroll
                for (int m = 0; m < MT; m++)
                {
                    int c[4];
                    mma_s8(xa[m][0], b0w, b1w, c);
                    acc[j][m][0] += (float)c[0] * (dx[m][0][0] * d0);
                    acc[j][m][1] += (float)c[1] * (dx[m][0][0] * d1);
                    acc[j][m][2] += (float)c[2] * (dx[m][0][1] * d0);
                    acc[j][m][3] += (float)c[3] * (dx[m][0][1] * d1);
                }
            }
        }
    }
}
#endif

// TILED: w is a Q4_0 matrix in the tiled layout (T = T_Q4_0, rows a multiple of 8, cols of 128); rowBytes is unused. Its K
// slices are whole block groups.
// rowBlock: the block's MMQ_ROWS rows of w, from the launch's targets (mmq_kernel); the K-split tickets and partials are
// per launch-wide tile (blockIdx.x, blockIdx.y).
template <int T, int MT, bool TILED>
__device__ __forceinline__ void mmq(const u8* __restrict__ w, i64 rowBytes, int rows, int rowBlock, int cols, const i8* __restrict__ xq,
                                    const XScale* __restrict__ xs, float* y, int tokens, int accumulate, float* partials, int* tickets)
{
#if defined(PE_INT8_MMA)
    const int TileFloats = MT * 16 * MMQ_ROWS;
    __shared__ float partial[TileFloats];
    __shared__ int isLast;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
    int r0 = rowBlock * MMQ_ROWS, t0 = blockIdx.y * (MT * 16);
    int blocksPerRow = cols >> 5, steps = cols / MmaStep<T>::Elems;
    // This warp's slice of the row's steps: slice blockIdx.z * MMQ_KSPLIT + warp of gridDim.z * MMQ_KSPLIT.
    int splits = gridDim.z, slices = splits * MMQ_KSPLIT;
    int per = (steps + slices - 1) / slices, s0 = (blockIdx.z * MMQ_KSPLIT + warp) * per, s1 = min(steps, s0 + per);

    // This lane's A rows: tokens t0 + 16m + g and + 8 (clamped to the last token: their results are not written).
    const i8* xrow[MT][2];
    const XScale* srow[MT][2];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < 2; i++)
        {
            int t = min(t0 + 16 * m + 8 * i + g, tokens - 1);
            xrow[m][i] = xq + (i64)t * cols;
            srow[m][i] = xs + (i64)t * blocksPerRow;
        }
    // This lane's B rows: row g of each 8-row tile (clamped to the last row).
    const u8* wrow[MMQ_TILES];
#pragma unroll
    for (int j = 0; j < MMQ_TILES; j++) wrow[j] = w + (i64)min(r0 + 8 * j + g, rows - 1) * rowBytes;

    float acc[MMQ_TILES][MT][4];
#pragma unroll
    for (int j = 0; j < MMQ_TILES; j++)
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int k = 0; k < 4; k++) acc[j][m][k] = 0.f;

    if (TILED)
    {
        int groups = cols / TQ_GROUP, gper = (groups + slices - 1) / slices, g0 = (blockIdx.z * MMQ_KSPLIT + warp) * gper;
        mmq_tiled_q4_0<MT>(w, rows, cols, r0, g0, min(groups, g0 + gper), lane, q, xrow, srow, acc);
    }
    else if (MMQ_STAGED && splits == 1 && (cols & 255) == 0 && (rowBytes & 15) == 0 && ((unsigned long long)w & 15) == 0)
        mmq_staged<T, MT>(w, rowBytes, rows, steps, r0, warp, q, g, xrow, srow, acc);
    else
    {
        UNROLL(MMQ_UNROLL)
        for (int s = s0; s < s1; s++)
        {
            const int ahead = T == T_Q4_K ? MMQ_PREFETCH_Q4_K : MMQ_PREFETCH;
            if (ahead > 0 && q == 0 && s + ahead < s1)
            {
                int ps = s + ahead; // Q4_K: the step's quants, past the super-block's scales
                i64 at = T == T_Q4_K ? (i64)(ps >> 2) * 144 + 16 + 32 * (ps & 3) : (i64)ps * MmaStep<T>::Bytes;
#pragma unroll
                for (int j = 0; j < MMQ_TILES; j++) asm volatile("prefetch.global.L2 [%0];" ::"l"(wrow[j] + at));
            }
            u32 xa[MT][2][4];
            float dx[MT][2][2], sx[MT][2][2];
            mmq_load_x<T, MT>(xrow, srow, s, q, xa, dx, sx);
#pragma unroll
            for (int j = 0; j < MMQ_TILES; j++) mmq_step<T, MT>(wrow[j], s, q, g, xa, dx, sx, acc[j]);
        }
    }

    // Warp-ordered sum of the K slices: partial[token][row] within the tile.
    for (int k = 0; k < MMQ_KSPLIT; k++)
    {
        if (warp == k)
        {
#pragma unroll
            for (int j = 0; j < MMQ_TILES; j++)
#pragma unroll
                for (int m = 0; m < MT; m++)
#pragma unroll
                    for (int c = 0; c < 4; c++)
                    {
                        int tok = 16 * m + g + 8 * (c >> 1), r = 8 * j + 2 * q + (c & 1);
                        float* p = &partial[tok * MMQ_ROWS + r];
                        *p = k == 0 ? acc[j][m][c] : *p + acc[j][m][c];
                    }
        }
        __syncthreads();
    }
    const float* sum = partial;
    if (splits > 1)
    {
        // Hand this slice to the tile's last block (the attention_split pattern), which adds them in slice order.
        i64 tile = (i64)blockIdx.y * gridDim.x + blockIdx.x;
        float* all = partials + tile * splits * TileFloats;
        for (int i = threadIdx.x; i < TileFloats; i += blockDim.x) all[(i64)blockIdx.z * TileFloats + i] = partial[i];
        __threadfence(); // this slice is visible device-wide before its ticket is taken
        __syncthreads();
        if (threadIdx.x == 0) isLast = atomicAdd(tickets + tile, 1) == splits - 1;
        __syncthreads();
        if (!isLast) return;
        __threadfence();
        for (int i = threadIdx.x; i < TileFloats; i += blockDim.x)
        {
            float v = load_cg(all + i);
            for (int z = 1; z < splits; z++) v += load_cg(all + (i64)z * TileFloats + i);
            partial[i] = v;
        }
        if (threadIdx.x == 0) tickets[tile] = 0; // ready for the next launch
        __syncthreads();
    }
    for (int i = threadIdx.x; i < TileFloats; i += blockDim.x)
    {
        int tok = t0 + i / MMQ_ROWS, r = r0 + i % MMQ_ROWS;
        if (tok >= tokens || r >= rows) continue;
        float* out = y + (i64)tok * rows + r;
        *out = accumulate ? *out + sum[i] : sum[i];
    }
#endif
}

// The one-tile Q4_0 and Q8_0 kernels are capped for MMQ_MIN_BLOCKS blocks per SM; the others keep ptxas's own choice (note:
// __launch_bounds__(n, 1) is not the same as __launch_bounds__(n) to ptxas: it took Q4_K's one-tile kernel from 104 to 139 registers).
#if MMQ_MIN_BLOCKS > 1
#define MMQ_CAPPED_BOUNDS __launch_bounds__(MMQ_KSPLIT * 32, MMQ_MIN_BLOCKS)
#else
#define MMQ_CAPPED_BOUNDS __launch_bounds__(MMQ_KSPLIT * 32)
#endif
// One launch multiplies up to three targets of one type by the same quantized x (their row blocks side by side in
// blockIdx.x), so q, k and v (or gate and up) fill the GPU together and need fewer K slices than each alone.
template <int T, int MT, bool TILED>
__device__ __forceinline__ void mmq_targets(const MatVecTargets& a, int cols, const i8* xq, const XScale* xs, int tokens, float* partials, int* tickets)
{
    // Fields picked one by one (not a reference into the parameter array, which would copy it to local memory).
    int b = (int)blockIdx.x, i = a.count > 2 && b >= a.t[2].firstBlock ? 2 : a.count > 1 && b >= a.t[1].firstBlock ? 1 : 0;
    const u8* w = i == 2 ? a.t[2].w : i == 1 ? a.t[1].w : a.t[0].w;
    i64 rowBytes = i == 2 ? a.t[2].rowBytes : i == 1 ? a.t[1].rowBytes : a.t[0].rowBytes;
    float* y = i == 2 ? a.t[2].y : i == 1 ? a.t[1].y : a.t[0].y;
    int rows = i == 2 ? a.t[2].rows : i == 1 ? a.t[1].rows : a.t[0].rows;
    int first = i == 2 ? a.t[2].firstBlock : i == 1 ? a.t[1].firstBlock : a.t[0].firstBlock;
    mmq<T, MT, TILED>(w, rowBytes, rows, b - first, cols, xq, xs, y, tokens, a.accumulate, partials, tickets);
}
#define MMQ_KERNEL(name, T, MT, BOUNDS, TILED)                                                                         \
    extern "C" __global__ void BOUNDS mmq_##name##_x##MT(MatVecTargets a, int cols, const i8* xq, const XScale* xs,   \
                                     int tokens, float* partials, int* tickets)                                       \
    { PDL_ENTRY(); mmq_targets<T, MT, TILED>(a, cols, xq, xs, tokens, partials, tickets); }
#define MMQ_KERNELS(name, T, BOUNDS1, TILED)                                                                           \
    MMQ_KERNEL(name, T, 1, BOUNDS1, TILED) MMQ_KERNEL(name, T, 2, __launch_bounds__(MMQ_KSPLIT * 32), TILED)        \
    MMQ_KERNEL(name, T, 4, __launch_bounds__(MMQ_KSPLIT * 32), TILED)

MMQ_KERNELS(q4_0, T_Q4_0, MMQ_CAPPED_BOUNDS, false)
MMQ_KERNELS(q8_0, T_Q8_0, MMQ_CAPPED_BOUNDS, false)
MMQ_KERNELS(q4_k, T_Q4_K, __launch_bounds__(MMQ_KSPLIT * 32), false)
MMQ_KERNELS(q4_0_tiled, T_Q4_0, MMQ_CAPPED_BOUNDS, true)

// ---------------------------------------------------------------------------------------------------------------
// Prompt path: weights dequantized to F16 for a cuBLAS GEMM on the tensor cores.
// out[r * cols + c] = dequantize(w)[r, c] as f16. Grid (ceil(cols / (16 * blockDim)), min(rows, 65535)), rows taken in
// grid-y strides (no division in the index math): a thread dequantizes 16 consecutive elements of a row (deq16) and
// writes them as two 16-byte stores. Measured variants (docs/gpu-kernels.md#prompt-gemm-inputs): 32 elements a thread,
// and the stores staged through shared memory into coalesced 512-byte writes, were both slower.
// ---------------------------------------------------------------------------------------------------------------
__device__ __forceinline__ U32x4 pack8_f16(const float* v)
{
    U32x4 a;
    a.x = pack_h2(v[0], v[1]); a.y = pack_h2(v[2], v[3]);
    a.z = pack_h2(v[4], v[5]); a.w = pack_h2(v[6], v[7]);
    return a;
}

template <int T>
__device__ __forceinline__ void dequantize_f16(const u8* w, i64 rowBytes, i64 rows, int cols, u16* out)
{
    int e0 = (int)(blockIdx.x * blockDim.x + threadIdx.x) << 4;
    if (e0 >= cols) return;
    for (i64 r = blockIdx.y; r < rows; r += gridDim.y)
    {
        float v[16];
        deq16<T>(w + r * rowBytes, e0, cols, v);
        u16* o = out + r * cols + e0;
        if (e0 + 16 <= cols && (((unsigned long long)o) & 15) == 0)
        {
            ((U32x4*)o)[0] = pack8_f16(v);
            ((U32x4*)o)[1] = pack8_f16(v + 8);
        }
        else
        {
#pragma unroll
            for (int i = 0; i < 16; i++) if (e0 + i < cols) o[i] = f2h(v[i]);
        }
    }
}

#define DEQUANTIZE_F16_KERNEL(name, T)                                                                                 \
    extern "C" __global__ void dequantize_f16_##name(const u8* w, i64 rowBytes, i64 rows, int cols, u16* out)        \
    { PDL_ENTRY(); dequantize_f16<T>(w, rowBytes, rows, cols, out); }

DEQUANTIZE_F16_KERNEL(bf16, T_BF16)
DEQUANTIZE_F16_KERNEL(q8_0, T_Q8_0)
DEQUANTIZE_F16_KERNEL(q4_0, T_Q4_0)
DEQUANTIZE_F16_KERNEL(q4_k, T_Q4_K)
DEQUANTIZE_F16_KERNEL(q5_k, T_Q5_K)
DEQUANTIZE_F16_KERNEL(q6_k, T_Q6_K)

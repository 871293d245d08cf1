using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

// Multi-token dots for prompts: one weight row against several activation rows at once: 8 tokens for F16 (its f16 → f32
// conversion costs more than the FMAs it feeds) and Q8_0/Q4_0 (measured ~15% faster than 4), 4 for the K-quants, whose
// decoded chunk and per-token sums already fill the registers, and F32/BF16. Each weight block is loaded and decoded (nibbles unpacked,
// scales unpacked, f16 converted) once and then used for every token while it sits in registers, so a prompt costs
// little more than the activation side of the arithmetic per row·token.
// Per token, every kernel performs exactly the operations of its single-token AVX2 kernel in the same order
// (same integer block sums, same float accumulators, same final reduction), so its results are bit-identical to
// that kernel's: the single-token kernels stay the oracle. (Tests assert this equality.)
public static unsafe partial class QuantDot
{
    /// <summary>
    /// The multi-token kernel for a weight type: <c>y[t * yStride] = Dot(w, act + t * actRowBytes)</c> for t &lt; <paramref name="width"/>,
    /// as <c>kernel(w, act, actRowBytes, cols, y, yStride)</c>; null (and width 0) at <see cref="KernelIsa.Scalar"/>, where callers
    /// use <see cref="Resolve"/> per token. The AVX-512 level uses the AVX2 kernels (every AVX-512 processor we accept runs
    /// AVX2): its grouped n &gt; 1 results then equal the AVX2 single-token kernel's rather than the AVX-512 one's.
    /// </summary>
    internal static delegate*<byte*, byte*, long, long, float*, long, void> ResolveMultiToken(GgmlType weightType, KernelIsa isa, out int width)
    {
        KernelIsaSupport.Require(isa);
        width = 0;
        if (isa == KernelIsa.Scalar) return null;
        delegate*<byte*, byte*, long, long, float*, long, void> kernel = weightType switch
        {
            GgmlType.F32 => &F32Avx2X4,
            GgmlType.F16 => &F16Avx2X8,
            GgmlType.BF16 => &BF16Avx2X4,
            GgmlType.Q8_0 => &Q8_0Avx2X8,
            GgmlType.Q4_0 => &Q4_0Avx2X8,
            GgmlType.Q4_K => &Q4_KAvx2X4,
            GgmlType.Q5_K => &Q5_KAvx2X4,
            GgmlType.Q6_K => &Q6_KAvx2X4,
            _ => throw new NotSupportedException($"no CPU dot kernel for weight type {weightType}"),
        };
        width = weightType is GgmlType.F16 or GgmlType.Q8_0 or GgmlType.Q4_0 ? 8 : 4;
        return kernel;
    }

    // ---------------------------------------------------------------- float weights

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void F32Avx2X4(byte* w, byte* act, long actRowBytes, long n, float* y, long yStride)
    {
        float* x = (float*)w;
        float* a0 = (float*)act, a1 = (float*)(act + actRowBytes), a2 = (float*)(act + 2 * actRowBytes), a3 = (float*)(act + 3 * actRowBytes);
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        long i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var w0 = Vector256.Load(x + i);
            var w1 = Vector256.Load(x + i + 8);
            c00 = Fma.MultiplyAdd(w0, Vector256.Load(a0 + i), c00);
            c01 = Fma.MultiplyAdd(w1, Vector256.Load(a0 + i + 8), c01);
            c10 = Fma.MultiplyAdd(w0, Vector256.Load(a1 + i), c10);
            c11 = Fma.MultiplyAdd(w1, Vector256.Load(a1 + i + 8), c11);
            c20 = Fma.MultiplyAdd(w0, Vector256.Load(a2 + i), c20);
            c21 = Fma.MultiplyAdd(w1, Vector256.Load(a2 + i + 8), c21);
            c30 = Fma.MultiplyAdd(w0, Vector256.Load(a3 + i), c30);
            c31 = Fma.MultiplyAdd(w1, Vector256.Load(a3 + i + 8), c31);
        }
        for (; i + 8 <= n; i += 8)
        {
            var w0 = Vector256.Load(x + i);
            c00 = Fma.MultiplyAdd(w0, Vector256.Load(a0 + i), c00);
            c10 = Fma.MultiplyAdd(w0, Vector256.Load(a1 + i), c10);
            c20 = Fma.MultiplyAdd(w0, Vector256.Load(a2 + i), c20);
            c30 = Fma.MultiplyAdd(w0, Vector256.Load(a3 + i), c30);
        }
        float s0 = Vector256.Sum(c00 + c01), s1 = Vector256.Sum(c10 + c11), s2 = Vector256.Sum(c20 + c21), s3 = Vector256.Sum(c30 + c31);
        for (; i < n; i++)
        {
            s0 += x[i] * a0[i];
            s1 += x[i] * a1[i];
            s2 += x[i] * a2[i];
            s3 += x[i] * a3[i];
        }
        y[0] = s0; y[yStride] = s1; y[2 * yStride] = s2; y[3 * yStride] = s3;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void F16Avx2X8(byte* w, byte* act, long actRowBytes, long n, float* y, long yStride)
    {
        ushort* x = (ushort*)w;
        float* a0 = (float*)act, a1 = (float*)(act + actRowBytes), a2 = (float*)(act + 2 * actRowBytes), a3 = (float*)(act + 3 * actRowBytes);
        float* a4 = (float*)(act + 4 * actRowBytes), a5 = (float*)(act + 5 * actRowBytes), a6 = (float*)(act + 6 * actRowBytes), a7 = (float*)(act + 7 * actRowBytes);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        long i = 0;
        for (; i + 8 <= n; i += 8)
        {
            var wv = HalfConversion.ToSingle(Avx2.ConvertToVector256Int32(x + i).AsUInt32());
            c0 = Fma.MultiplyAdd(wv, Vector256.Load(a0 + i), c0);
            c1 = Fma.MultiplyAdd(wv, Vector256.Load(a1 + i), c1);
            c2 = Fma.MultiplyAdd(wv, Vector256.Load(a2 + i), c2);
            c3 = Fma.MultiplyAdd(wv, Vector256.Load(a3 + i), c3);
            c4 = Fma.MultiplyAdd(wv, Vector256.Load(a4 + i), c4);
            c5 = Fma.MultiplyAdd(wv, Vector256.Load(a5 + i), c5);
            c6 = Fma.MultiplyAdd(wv, Vector256.Load(a6 + i), c6);
            c7 = Fma.MultiplyAdd(wv, Vector256.Load(a7 + i), c7);
        }
        float s0 = Vector256.Sum(c0), s1 = Vector256.Sum(c1), s2 = Vector256.Sum(c2), s3 = Vector256.Sum(c3);
        float s4 = Vector256.Sum(c4), s5 = Vector256.Sum(c5), s6 = Vector256.Sum(c6), s7 = Vector256.Sum(c7);
        for (; i < n; i++)
        {
            float wi = HalfConversion.Table[x[i]];
            s0 += wi * a0[i]; s1 += wi * a1[i]; s2 += wi * a2[i]; s3 += wi * a3[i];
            s4 += wi * a4[i]; s5 += wi * a5[i]; s6 += wi * a6[i]; s7 += wi * a7[i];
        }
        y[0] = s0; y[yStride] = s1; y[2 * yStride] = s2; y[3 * yStride] = s3;
        y[4 * yStride] = s4; y[5 * yStride] = s5; y[6 * yStride] = s6; y[7 * yStride] = s7;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BF16Avx2X4(byte* w, byte* act, long actRowBytes, long n, float* y, long yStride)
    {
        ushort* x = (ushort*)w;
        float* a0 = (float*)act, a1 = (float*)(act + actRowBytes), a2 = (float*)(act + 2 * actRowBytes), a3 = (float*)(act + 3 * actRowBytes);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        long i = 0;
        for (; i + 8 <= n; i += 8)
        {
            var wv = (Avx2.ConvertToVector256Int32(x + i).AsUInt32() << 16).AsSingle();
            c0 = Fma.MultiplyAdd(wv, Vector256.Load(a0 + i), c0);
            c1 = Fma.MultiplyAdd(wv, Vector256.Load(a1 + i), c1);
            c2 = Fma.MultiplyAdd(wv, Vector256.Load(a2 + i), c2);
            c3 = Fma.MultiplyAdd(wv, Vector256.Load(a3 + i), c3);
        }
        float s0 = Vector256.Sum(c0), s1 = Vector256.Sum(c1), s2 = Vector256.Sum(c2), s3 = Vector256.Sum(c3);
        for (; i < n; i++)
        {
            float wi = BF16(x[i]);
            s0 += wi * a0[i];
            s1 += wi * a1[i];
            s2 += wi * a2[i];
            s3 += wi * a3[i];
        }
        y[0] = s0; y[yStride] = s1; y[2 * yStride] = s2; y[3 * yStride] = s3;
    }

    // ---------------------------------------------------------------- Q8_0 / Q4_0

    /// <summary>One token's step of a signed-weight block: Σ|w|·(sign(w)·x) scaled by dw·dx into the token's accumulator
    /// (the same int32 lanes and the same FMA as <see cref="Q8_0Block256"/> in the single-token kernel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SignedBlockStep(Vector256<byte> absW, Vector256<sbyte> qw, float dw, byte* x, Vector256<float> acc)
    {
        var sumi = DotU8S8(absW, Avx2.Sign(Vector256.Load((sbyte*)x + 2), qw));
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(dw * HalfConversion.Load(x)), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q8_0Avx2X8(byte* w, byte* act, long actRowBytes, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        byte* x4 = act + 4 * actRowBytes, x5 = act + 5 * actRowBytes, x6 = act + 6 * actRowBytes, x7 = act + 7 * actRowBytes;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, x0 += Q8_0Bytes, x1 += Q8_0Bytes, x2 += Q8_0Bytes, x3 += Q8_0Bytes,
                                                        x4 += Q8_0Bytes, x5 += Q8_0Bytes, x6 += Q8_0Bytes, x7 += Q8_0Bytes)
        {
            var qw = Vector256.Load((sbyte*)w + 2);
            var absW = Avx2.Abs(qw);
            float dw = HalfConversion.Load(w);
            c0 = SignedBlockStep(absW, qw, dw, x0, c0);
            c1 = SignedBlockStep(absW, qw, dw, x1, c1);
            c2 = SignedBlockStep(absW, qw, dw, x2, c2);
            c3 = SignedBlockStep(absW, qw, dw, x3, c3);
            c4 = SignedBlockStep(absW, qw, dw, x4, c4);
            c5 = SignedBlockStep(absW, qw, dw, x5, c5);
            c6 = SignedBlockStep(absW, qw, dw, x6, c6);
            c7 = SignedBlockStep(absW, qw, dw, x7, c7);
        }
        y[0] = Vector256.Sum(c0); y[yStride] = Vector256.Sum(c1); y[2 * yStride] = Vector256.Sum(c2); y[3 * yStride] = Vector256.Sum(c3);
        y[4 * yStride] = Vector256.Sum(c4); y[5 * yStride] = Vector256.Sum(c5); y[6 * yStride] = Vector256.Sum(c6); y[7 * yStride] = Vector256.Sum(c7);
    }

    /// <summary>
    /// Q4_0 weights are decoded once per block to signed q − 8 and then take the Q8_0 path. Per 16-bit pair this gives
    /// (q0−8)·x0 + (q1−8)·x1, the very value the single-token kernel's (q0·x0 + q1·x1) − (8·x0 + 8·x1) produces
    /// (no saturation either way: |pair| ≤ 2·15·127), so the int32 block sums are identical.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_0Avx2X8(byte* w, byte* act, long actRowBytes, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        byte* x4 = act + 4 * actRowBytes, x5 = act + 5 * actRowBytes, x6 = act + 6 * actRowBytes, x7 = act + 7 * actRowBytes;
        var lowMask = Vector128.Create((byte)0xF);
        var eight = Vector256.Create((sbyte)8);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default, c4 = default, c5 = default, c6 = default, c7 = default;
        for (long b = 0; b < n / 32; b++, w += Q4_0Bytes, x0 += Q8_0Bytes, x1 += Q8_0Bytes, x2 += Q8_0Bytes, x3 += Q8_0Bytes,
                                                        x4 += Q8_0Bytes, x5 += Q8_0Bytes, x6 += Q8_0Bytes, x7 += Q8_0Bytes)
        {
            var packed = Vector128.Load(w + 2);
            var qw = Vector256.Create(packed & lowMask, Vector128.ShiftRightLogical(packed, 4)).AsSByte() - eight;
            var absW = Avx2.Abs(qw);
            float dw = HalfConversion.Load(w);
            c0 = SignedBlockStep(absW, qw, dw, x0, c0);
            c1 = SignedBlockStep(absW, qw, dw, x1, c1);
            c2 = SignedBlockStep(absW, qw, dw, x2, c2);
            c3 = SignedBlockStep(absW, qw, dw, x3, c3);
            c4 = SignedBlockStep(absW, qw, dw, x4, c4);
            c5 = SignedBlockStep(absW, qw, dw, x5, c5);
            c6 = SignedBlockStep(absW, qw, dw, x6, c6);
            c7 = SignedBlockStep(absW, qw, dw, x7, c7);
        }
        y[0] = Vector256.Sum(c0); y[yStride] = Vector256.Sum(c1); y[2 * yStride] = Vector256.Sum(c2); y[3 * yStride] = Vector256.Sum(c3);
        y[4 * yStride] = Vector256.Sum(c4); y[5 * yStride] = Vector256.Sum(c5); y[6 * yStride] = Vector256.Sum(c6); y[7 * yStride] = Vector256.Sum(c7);
    }

    // ---------------------------------------------------------------- K-quants

    /// <summary>A token's share of one 64-element chunk of a K-quant super-block: two scaled 32-element dots.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ChunkStep(Vector256<byte> lo, Vector256<byte> hi, Vector256<short> scaleLo, Vector256<short> scaleHi, sbyte* q8, Vector256<int> sumi)
    {
        sumi += ScaledDot(lo, Vector256.Load(q8), scaleLo);
        return sumi + ScaledDot(hi, Vector256.Load(q8 + 32), scaleHi);
    }

    /// <summary>Q4_K/Q5_K per-token closing of a super-block: the scale FMA and the min-correction FMA of the single-token kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void KQuantClose(Vector256<int> sumi, float d, float dmin, ulong mins, byte* x, ref Vector256<float> acc, ref Vector256<float> accMin)
    {
        float dx = Unsafe.ReadUnaligned<float>(x);
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(d * dx), acc);
        accMin = Fma.MultiplyAdd(Avx.ConvertToVector256Single(MinProducts(mins, x)), Vector256.Create(dmin * dx), accMin);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_KAvx2X4(byte* w, byte* act, long actRowBytes, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        var m4 = Vector256.Create((byte)0xF);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        Vector256<float> m0 = default, m1 = default, m2 = default, m3 = default;
        for (long b = 0; b < n / 256; b++, w += Q4_KBytes, x0 += Q8_KBytes, x1 += Q8_KBytes, x2 += Q8_KBytes, x3 += Q8_KBytes)
        {
            UnpackScaleMins(w + 4, out ulong scales, out ulong mins);
            Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
            for (int c = 0; c < 4; c++)
            {
                var q = Vector256.Load(w + 16 + 32 * c);
                var lo = q & m4;
                var hi = Vector256.ShiftRightLogical(q, 4);
                var scLo = Vector256.Create((short)(byte)(scales >> (16 * c)));
                var scHi = Vector256.Create((short)(byte)(scales >> (16 * c + 8)));
                s0 = ChunkStep(lo, hi, scLo, scHi, (sbyte*)x0 + Q8KQs + 64 * c, s0);
                s1 = ChunkStep(lo, hi, scLo, scHi, (sbyte*)x1 + Q8KQs + 64 * c, s1);
                s2 = ChunkStep(lo, hi, scLo, scHi, (sbyte*)x2 + Q8KQs + 64 * c, s2);
                s3 = ChunkStep(lo, hi, scLo, scHi, (sbyte*)x3 + Q8KQs + 64 * c, s3);
            }
            float d = HalfConversion.Load(w), dmin = HalfConversion.Load(w + 2);
            KQuantClose(s0, d, dmin, mins, x0, ref c0, ref m0);
            KQuantClose(s1, d, dmin, mins, x1, ref c1, ref m1);
            KQuantClose(s2, d, dmin, mins, x2, ref c2, ref m2);
            KQuantClose(s3, d, dmin, mins, x3, ref c3, ref m3);
        }
        y[0] = Vector256.Sum(c0) - Vector256.Sum(m0);
        y[yStride] = Vector256.Sum(c1) - Vector256.Sum(m1);
        y[2 * yStride] = Vector256.Sum(c2) - Vector256.Sum(m2);
        y[3 * yStride] = Vector256.Sum(c3) - Vector256.Sum(m3);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q5_KAvx2X4(byte* w, byte* act, long actRowBytes, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        var m4 = Vector256.Create((byte)0xF);
        var bit4 = Vector256.Create((byte)0x10);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        Vector256<float> m0 = default, m1 = default, m2 = default, m3 = default;
        for (long b = 0; b < n / 256; b++, w += Q5_KBytes, x0 += Q8_KBytes, x1 += Q8_KBytes, x2 += Q8_KBytes, x3 += Q8_KBytes)
        {
            UnpackScaleMins(w + 4, out ulong scales, out ulong mins);
            var qh = Vector256.Load(w + 16);
            Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
            for (int c = 0; c < 4; c++)
            {
                var q = Vector256.Load(w + 48 + 32 * c);
                var mLo = Vector256.Create((byte)(1 << (2 * c)));
                var mHi = Vector256.Create((byte)(2 << (2 * c)));
                var lo = (q & m4) | (Vector256.Equals(qh & mLo, mLo) & bit4);
                var hi = Vector256.ShiftRightLogical(q, 4) | (Vector256.Equals(qh & mHi, mHi) & bit4);
                var scLo = Vector256.Create((short)(byte)(scales >> (16 * c)));
                var scHi = Vector256.Create((short)(byte)(scales >> (16 * c + 8)));
                s0 = ChunkStep(lo, hi, scLo, scHi, (sbyte*)x0 + Q8KQs + 64 * c, s0);
                s1 = ChunkStep(lo, hi, scLo, scHi, (sbyte*)x1 + Q8KQs + 64 * c, s1);
                s2 = ChunkStep(lo, hi, scLo, scHi, (sbyte*)x2 + Q8KQs + 64 * c, s2);
                s3 = ChunkStep(lo, hi, scLo, scHi, (sbyte*)x3 + Q8KQs + 64 * c, s3);
            }
            float d = HalfConversion.Load(w), dmin = HalfConversion.Load(w + 2);
            KQuantClose(s0, d, dmin, mins, x0, ref c0, ref m0);
            KQuantClose(s1, d, dmin, mins, x1, ref c1, ref m1);
            KQuantClose(s2, d, dmin, mins, x2, ref c2, ref m2);
            KQuantClose(s3, d, dmin, mins, x3, ref c3, ref m3);
        }
        y[0] = Vector256.Sum(c0) - Vector256.Sum(m0);
        y[yStride] = Vector256.Sum(c1) - Vector256.Sum(m1);
        y[2 * yStride] = Vector256.Sum(c2) - Vector256.Sum(m2);
        y[3 * yStride] = Vector256.Sum(c3) - Vector256.Sum(m3);
    }

    /// <summary>A token's share of one Q6_K half: four scaled 32-element dots.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6HalfStep(Vector256<byte> q0, Vector256<byte> q1, Vector256<byte> q2, Vector256<byte> q3,
        Vector256<short> k0, Vector256<short> k1, Vector256<short> k2, Vector256<short> k3, sbyte* q8, Vector256<int> sumi)
    {
        sumi += ScaledDot(q0, Vector256.Load(q8), k0);
        sumi += ScaledDot(q1, Vector256.Load(q8 + 32), k1);
        sumi += ScaledDot(q2, Vector256.Load(q8 + 64), k2);
        return sumi + ScaledDot(q3, Vector256.Load(q8 + 96), k3);
    }

    /// <summary>Q6_K per-token closing of a super-block: the scale FMA and the −32 offset FMA of the single-token kernel.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q6Close(Vector256<int> sumi, float dw, Vector256<short> scales16, byte* x, ref Vector256<float> acc, ref Vector256<float> accOffset)
    {
        var vd = Vector256.Create(dw * Unsafe.ReadUnaligned<float>(x));
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), vd, acc);
        accOffset = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q6OffsetProducts(scales16, x)), vd, accOffset);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q6_KAvx2X4(byte* w, byte* act, long actRowBytes, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
        for (long b = 0; b < n / 256; b++, w += Q6_KBytes, x0 += Q8_KBytes, x1 += Q8_KBytes, x2 += Q8_KBytes, x3 += Q8_KBytes)
        {
            sbyte* sc = (sbyte*)w + 192;
            Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
            for (int h = 0; h < 2; h++)
            {
                Q6Half(w, h, out var q0, out var q1, out var q2, out var q3);
                sbyte* s = sc + 8 * h;
                var k0 = Vector256.Create(Vector128.Create((short)s[0]), Vector128.Create((short)s[1]));
                var k1 = Vector256.Create(Vector128.Create((short)s[2]), Vector128.Create((short)s[3]));
                var k2 = Vector256.Create(Vector128.Create((short)s[4]), Vector128.Create((short)s[5]));
                var k3 = Vector256.Create(Vector128.Create((short)s[6]), Vector128.Create((short)s[7]));
                int offset = Q8KQs + 128 * h;
                s0 = Q6HalfStep(q0, q1, q2, q3, k0, k1, k2, k3, (sbyte*)x0 + offset, s0);
                s1 = Q6HalfStep(q0, q1, q2, q3, k0, k1, k2, k3, (sbyte*)x1 + offset, s1);
                s2 = Q6HalfStep(q0, q1, q2, q3, k0, k1, k2, k3, (sbyte*)x2 + offset, s2);
                s3 = Q6HalfStep(q0, q1, q2, q3, k0, k1, k2, k3, (sbyte*)x3 + offset, s3);
            }
            float dw = HalfConversion.Load(w + 208);
            var scales16 = Avx2.ConvertToVector256Int16(sc);
            Q6Close(s0, dw, scales16, x0, ref c0, ref o0);
            Q6Close(s1, dw, scales16, x1, ref c1, ref o1);
            Q6Close(s2, dw, scales16, x2, ref c2, ref o2);
            Q6Close(s3, dw, scales16, x3, ref c3, ref o3);
        }
        y[0] = Vector256.Sum(c0) - 32 * Vector256.Sum(o0);
        y[yStride] = Vector256.Sum(c1) - 32 * Vector256.Sum(o1);
        y[2 * yStride] = Vector256.Sum(c2) - 32 * Vector256.Sum(o2);
        y[3 * yStride] = Vector256.Sum(c3) - 32 * Vector256.Sum(o3);
    }
}

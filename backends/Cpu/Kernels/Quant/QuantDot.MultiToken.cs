using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

// Multi-token dots for prompts and for several sequences decoding together: one weight row against several activation
// rows at once — groups of 8 and 4 tokens for F16, Q8_0 and Q4_0, of 4 for the K-quants (whose decoded chunk and per-token
// sums already fill the registers), F32 and BF16. Each weight block is loaded and decoded (nibbles unpacked, scales
// unpacked, f16 converted) once and then used for every token while it sits in registers, so a prompt costs little more
// than the activation side of the arithmetic per row·token.
// Per token, every kernel performs the canonical arithmetic (QuantDot.Lanes.cs): for the quantized types the tokens' exact
// block sums are reduced into one vector whose lanes are the tokens, and one FMA per block advances every token's
// accumulator; the float types keep the single-row AVX2 kernel's accumulators per token. So results are bit-identical to
// the single-row, multi-row and repacked kernels'. (Tests assert this equality.)
public static unsafe partial class QuantDot
{
    /// <summary>
    /// The multi-token kernel of a weight type for groups of <paramref name="width"/> tokens (8 or 4), as
    /// <c>kernel(w, act, actRowBytes, dx, dxStride, cols, y, yStride)</c>: <c>y[t * yStride] = Dot(w, act + t * actRowBytes)</c>
    /// for t &lt; width. Q4_0 and Q8_0 kernels read the tokens' activation scales as floats, block b's at
    /// <c>dx[b * dxStride + t]</c> (see <see cref="MultiTokenScales"/>); the others ignore dx. Null where the type has no
    /// kernel of that width, and at <see cref="KernelIsa.Scalar"/>, where callers use <see cref="Resolve"/> per token. For the
    /// quantized types the AVX-512 level uses the AVX2 kernels (every AVX-512 processor we accept runs AVX2; the canonical
    /// arithmetic is the same at both levels); the float types have AVX-512 kernels with the AVX-512 single-row kernels' accumulators.
    /// </summary>
    internal static delegate*<byte*, byte*, long, float*, long, long, float*, long, void> ResolveMultiToken(GgmlType weightType, KernelIsa isa, int width)
    {
        KernelIsaSupport.Require(isa);
        if (!IsSupported(weightType)) throw new NotSupportedException($"no CPU dot kernel for weight type {weightType}");
        if (isa == KernelIsa.Scalar) return null;
        if (isa == KernelIsa.Avx512 && GgmlTypes.Get(weightType).BlockSize == 1)
        {
            return (weightType, width) switch
            {
                (GgmlType.F32, 4) => &F32Avx512X4,
                (GgmlType.F16, 8) => &F16Avx512X8,
                (GgmlType.F16, 4) => &F16Avx512X4,
                (GgmlType.BF16, 4) => &BF16Avx512X4,
                _ => null,
            };
        }
        return (weightType, width) switch
        {
            (GgmlType.F32, 4) => &F32Avx2X4,
            (GgmlType.F16, 8) => &F16Avx2X8,
            (GgmlType.F16, 4) => &F16Avx2X4,
            (GgmlType.BF16, 4) => &BF16Avx2X4,
            (GgmlType.Q8_0, 8) => &Q8_0Avx2X8,
            (GgmlType.Q8_0, 4) => &Q8_0Avx2X4,
            (GgmlType.Q4_0, 8) => &Q4_0Avx2X8,
            (GgmlType.Q4_0, 4) => &Q4_0Avx2X4,
            (GgmlType.Q4_K, 4) => &Q4_KAvx2X4,
            (GgmlType.Q5_K, 4) => &Q5_KAvx2X4,
            (GgmlType.Q6_K, 4) => &Q6_KAvx2X4,
            _ => null,
        };
    }

    /// <summary>Whether the multi-token kernels of <paramref name="weightType"/> read the activation scales as floats
    /// (<c>dx[b * dxStride + t]</c>, filled by the caller from each quantized activation row).</summary>
    internal static bool MultiTokenScales(GgmlType weightType) => weightType is GgmlType.Q4_0 or GgmlType.Q8_0;

    // ---------------------------------------------------------------- float weights

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void F32Avx2X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
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
    private static void F16Avx2X8(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
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
    private static void F16Avx2X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        ushort* x = (ushort*)w;
        float* a0 = (float*)act, a1 = (float*)(act + actRowBytes), a2 = (float*)(act + 2 * actRowBytes), a3 = (float*)(act + 3 * actRowBytes);
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        long i = 0;
        for (; i + 8 <= n; i += 8)
        {
            var wv = HalfConversion.ToSingle(Avx2.ConvertToVector256Int32(x + i).AsUInt32());
            c0 = Fma.MultiplyAdd(wv, Vector256.Load(a0 + i), c0);
            c1 = Fma.MultiplyAdd(wv, Vector256.Load(a1 + i), c1);
            c2 = Fma.MultiplyAdd(wv, Vector256.Load(a2 + i), c2);
            c3 = Fma.MultiplyAdd(wv, Vector256.Load(a3 + i), c3);
        }
        y[0] = F16Tail(Vector256.Sum(c0), x, a0, i, n);
        y[yStride] = F16Tail(Vector256.Sum(c1), x, a1, i, n);
        y[2 * yStride] = F16Tail(Vector256.Sum(c2), x, a2, i, n);
        y[3 * yStride] = F16Tail(Vector256.Sum(c3), x, a3, i, n);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BF16Avx2X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
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

    /// <summary>F32 at the AVX-512 level: per token the two 16-lane accumulators of <see cref="F32Avx512"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void F32Avx512X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        float* x = (float*)w;
        float* a0 = (float*)act, a1 = (float*)(act + actRowBytes), a2 = (float*)(act + 2 * actRowBytes), a3 = (float*)(act + 3 * actRowBytes);
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        long i = 0;
        for (; i + 32 <= n; i += 32)
        {
            var w0 = Vector512.Load(x + i);
            var w1 = Vector512.Load(x + i + 16);
            c00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a0 + i), c00);
            c01 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a0 + i + 16), c01);
            c10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a1 + i), c10);
            c11 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a1 + i + 16), c11);
            c20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a2 + i), c20);
            c21 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a2 + i + 16), c21);
            c30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a3 + i), c30);
            c31 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a3 + i + 16), c31);
        }
        if (i + 16 <= n)
        {
            var w0 = Vector512.Load(x + i);
            c00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a0 + i), c00);
            c10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a1 + i), c10);
            c20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a2 + i), c20);
            c30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a3 + i), c30);
            i += 16;
        }
        y[0] = F32Tail(Vector512.Sum(c00 + c01), x, a0, i, n);
        y[yStride] = F32Tail(Vector512.Sum(c10 + c11), x, a1, i, n);
        y[2 * yStride] = F32Tail(Vector512.Sum(c20 + c21), x, a2, i, n);
        y[3 * yStride] = F32Tail(Vector512.Sum(c30 + c31), x, a3, i, n);
    }

    /// <summary>16 f16 weights from <paramref name="x"/> as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> F16x16(ushort* x, in HalfConversion.Constants512 c)
        => HalfConversion.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(x)), c);

    /// <summary>F16 at the AVX-512 level: per token the two 16-lane accumulators of <see cref="F16Avx512"/>; each 32-element
    /// step converts the weights once for the eight tokens.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void F16Avx512X8(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        ushort* x = (ushort*)w;
        float* a0 = (float*)act, a1 = (float*)(act + actRowBytes), a2 = (float*)(act + 2 * actRowBytes), a3 = (float*)(act + 3 * actRowBytes);
        float* a4 = (float*)(act + 4 * actRowBytes), a5 = (float*)(act + 5 * actRowBytes), a6 = (float*)(act + 6 * actRowBytes), a7 = (float*)(act + 7 * actRowBytes);
        var k = new HalfConversion.Constants512();
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        long i = 0;
        for (; i + 32 <= n; i += 32)
        {
            var w0 = F16x16(x + i, k);
            var w1 = F16x16(x + i + 16, k);
            c00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a0 + i), c00);
            c01 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a0 + i + 16), c01);
            c10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a1 + i), c10);
            c11 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a1 + i + 16), c11);
            c20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a2 + i), c20);
            c21 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a2 + i + 16), c21);
            c30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a3 + i), c30);
            c31 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a3 + i + 16), c31);
            c40 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a4 + i), c40);
            c41 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a4 + i + 16), c41);
            c50 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a5 + i), c50);
            c51 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a5 + i + 16), c51);
            c60 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a6 + i), c60);
            c61 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a6 + i + 16), c61);
            c70 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a7 + i), c70);
            c71 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a7 + i + 16), c71);
        }
        if (i + 16 <= n)
        {
            var w0 = F16x16(x + i, k);
            c00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a0 + i), c00);
            c10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a1 + i), c10);
            c20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a2 + i), c20);
            c30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a3 + i), c30);
            c40 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a4 + i), c40);
            c50 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a5 + i), c50);
            c60 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a6 + i), c60);
            c70 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a7 + i), c70);
            i += 16;
        }
        y[0] = F16Tail(Vector512.Sum(c00 + c01), x, a0, i, n);
        y[yStride] = F16Tail(Vector512.Sum(c10 + c11), x, a1, i, n);
        y[2 * yStride] = F16Tail(Vector512.Sum(c20 + c21), x, a2, i, n);
        y[3 * yStride] = F16Tail(Vector512.Sum(c30 + c31), x, a3, i, n);
        y[4 * yStride] = F16Tail(Vector512.Sum(c40 + c41), x, a4, i, n);
        y[5 * yStride] = F16Tail(Vector512.Sum(c50 + c51), x, a5, i, n);
        y[6 * yStride] = F16Tail(Vector512.Sum(c60 + c61), x, a6, i, n);
        y[7 * yStride] = F16Tail(Vector512.Sum(c70 + c71), x, a7, i, n);
    }

    /// <summary>F16 at the AVX-512 level, four tokens (as <see cref="F16Avx512X8"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void F16Avx512X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        ushort* x = (ushort*)w;
        float* a0 = (float*)act, a1 = (float*)(act + actRowBytes), a2 = (float*)(act + 2 * actRowBytes), a3 = (float*)(act + 3 * actRowBytes);
        var k = new HalfConversion.Constants512();
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        long i = 0;
        for (; i + 32 <= n; i += 32)
        {
            var w0 = F16x16(x + i, k);
            var w1 = F16x16(x + i + 16, k);
            c00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a0 + i), c00);
            c01 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a0 + i + 16), c01);
            c10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a1 + i), c10);
            c11 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a1 + i + 16), c11);
            c20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a2 + i), c20);
            c21 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a2 + i + 16), c21);
            c30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a3 + i), c30);
            c31 = Avx512F.FusedMultiplyAdd(w1, Vector512.Load(a3 + i + 16), c31);
        }
        if (i + 16 <= n)
        {
            var w0 = F16x16(x + i, k);
            c00 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a0 + i), c00);
            c10 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a1 + i), c10);
            c20 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a2 + i), c20);
            c30 = Avx512F.FusedMultiplyAdd(w0, Vector512.Load(a3 + i), c30);
            i += 16;
        }
        y[0] = F16Tail(Vector512.Sum(c00 + c01), x, a0, i, n);
        y[yStride] = F16Tail(Vector512.Sum(c10 + c11), x, a1, i, n);
        y[2 * yStride] = F16Tail(Vector512.Sum(c20 + c21), x, a2, i, n);
        y[3 * yStride] = F16Tail(Vector512.Sum(c30 + c31), x, a3, i, n);
    }

    /// <summary>BF16 at the AVX-512 level: per token the one 16-lane accumulator of <see cref="BF16Avx512"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void BF16Avx512X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        ushort* x = (ushort*)w;
        float* a0 = (float*)act, a1 = (float*)(act + actRowBytes), a2 = (float*)(act + 2 * actRowBytes), a3 = (float*)(act + 3 * actRowBytes);
        Vector512<float> c0 = default, c1 = default, c2 = default, c3 = default;
        long i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var wv = (Avx512F.ConvertToVector512UInt32(Vector256.Load(x + i)) << 16).AsSingle();
            c0 = Avx512F.FusedMultiplyAdd(wv, Vector512.Load(a0 + i), c0);
            c1 = Avx512F.FusedMultiplyAdd(wv, Vector512.Load(a1 + i), c1);
            c2 = Avx512F.FusedMultiplyAdd(wv, Vector512.Load(a2 + i), c2);
            c3 = Avx512F.FusedMultiplyAdd(wv, Vector512.Load(a3 + i), c3);
        }
        y[0] = BF16Tail(Vector512.Sum(c0), x, a0, i, n);
        y[yStride] = BF16Tail(Vector512.Sum(c1), x, a1, i, n);
        y[2 * yStride] = BF16Tail(Vector512.Sum(c2), x, a2, i, n);
        y[3 * yStride] = BF16Tail(Vector512.Sum(c3), x, a3, i, n);
    }

    // ---------------------------------------------------------------- Q8_0 / Q4_0

    /// <summary>One token's integer sums for a signed-weight block: Σ|w|·(sign(w)·x) as 8 int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SignedBlockSums(Vector256<byte> absW, Vector256<sbyte> qw, byte* x)
        => DotU8S8(absW, Avx2.Sign(Vector256.Load((sbyte*)x + 2), qw));

    /// <summary>Q4_0 weights decoded once per block to signed q − 8 (then the Q8_0 path applies: the integer sums are exact either way).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Q4_0Signed(byte* w, Vector128<byte> lowMask, Vector256<sbyte> eight)
    {
        var packed = Vector128.Load(w + 2);
        return Vector256.Create(packed & lowMask, Vector128.ShiftRightLogical(packed, 4)).AsSByte() - eight;
    }

    /// <summary>Eight tokens against one signed-weight block: their block sums as one vector (lane t: token t), scaled by
    /// dw·dx_t and accumulated (the canonical step).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SignedBlock8(Vector256<sbyte> qw, float dw, float* dx, byte* x0, byte* x1, byte* x2, byte* x3,
                                                 byte* x4, byte* x5, byte* x6, byte* x7, Vector256<float> acc)
    {
        var absW = Avx2.Abs(qw);
        var sums = Sum8(SignedBlockSums(absW, qw, x0), SignedBlockSums(absW, qw, x1), SignedBlockSums(absW, qw, x2), SignedBlockSums(absW, qw, x3),
                        SignedBlockSums(absW, qw, x4), SignedBlockSums(absW, qw, x5), SignedBlockSums(absW, qw, x6), SignedBlockSums(absW, qw, x7));
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), Vector256.Create(dw) * Vector256.Load(dx), acc);
    }

    /// <summary>Four tokens against one signed-weight block, as <see cref="SignedBlock8"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> SignedBlock4(Vector256<sbyte> qw, float dw, float* dx, byte* x0, byte* x1, byte* x2, byte* x3, Vector128<float> acc)
    {
        var absW = Avx2.Abs(qw);
        var sums = Sum4(SignedBlockSums(absW, qw, x0), SignedBlockSums(absW, qw, x1), SignedBlockSums(absW, qw, x2), SignedBlockSums(absW, qw, x3));
        return Fma.MultiplyAdd(Sse2.ConvertToVector128Single(sums), Vector128.Create(dw) * Vector128.Load(dx), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q8_0Avx2X8(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        byte* x4 = act + 4 * actRowBytes, x5 = act + 5 * actRowBytes, x6 = act + 6 * actRowBytes, x7 = act + 7 * actRowBytes;
        Vector256<float> acc = default, other = default; // Q8_0's even and odd blocks
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, dx += dxStride, x0 += Q8_0Bytes, x1 += Q8_0Bytes, x2 += Q8_0Bytes, x3 += Q8_0Bytes,
                                                        x4 += Q8_0Bytes, x5 += Q8_0Bytes, x6 += Q8_0Bytes, x7 += Q8_0Bytes)
        {
            acc = SignedBlock8(Vector256.Load((sbyte*)w + 2), HalfConversion.Load(w), dx, x0, x1, x2, x3, x4, x5, x6, x7, acc);
            (acc, other) = (other, acc);
        }
        Scatter8(acc + other, y, yStride);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q8_0Avx2X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        Vector128<float> acc = default, other = default; // Q8_0's even and odd blocks
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, dx += dxStride, x0 += Q8_0Bytes, x1 += Q8_0Bytes, x2 += Q8_0Bytes, x3 += Q8_0Bytes)
        {
            acc = SignedBlock4(Vector256.Load((sbyte*)w + 2), HalfConversion.Load(w), dx, x0, x1, x2, x3, acc);
            (acc, other) = (other, acc);
        }
        Scatter4(acc + other, y, yStride);
    }

    /// <summary>
    /// Q4_0 weights are decoded once per block to signed q − 8 and then take the Q8_0 path. Per 16-bit pair this gives
    /// (q0−8)·x0 + (q1−8)·x1, the very value the single-token kernel's (q0·x0 + q1·x1) − (8·x0 + 8·x1) produces
    /// (no saturation either way: |pair| ≤ 2·15·127), so the int32 block sums are identical.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_0Avx2X8(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        byte* x4 = act + 4 * actRowBytes, x5 = act + 5 * actRowBytes, x6 = act + 6 * actRowBytes, x7 = act + 7 * actRowBytes;
        var lowMask = Vector128.Create((byte)0xF);
        var eight = Vector256.Create((sbyte)8);
        Vector256<float> acc = default;
        for (long b = 0; b < n / 32; b++, w += Q4_0Bytes, dx += dxStride, x0 += Q8_0Bytes, x1 += Q8_0Bytes, x2 += Q8_0Bytes, x3 += Q8_0Bytes,
                                                        x4 += Q8_0Bytes, x5 += Q8_0Bytes, x6 += Q8_0Bytes, x7 += Q8_0Bytes)
            acc = SignedBlock8(Q4_0Signed(w, lowMask, eight), HalfConversion.Load(w), dx, x0, x1, x2, x3, x4, x5, x6, x7, acc);
        Scatter8(acc, y, yStride);
    }

    /// <inheritdoc cref="Q4_0Avx2X8"/>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_0Avx2X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        var lowMask = Vector128.Create((byte)0xF);
        var eight = Vector256.Create((sbyte)8);
        Vector128<float> acc = default;
        for (long b = 0; b < n / 32; b++, w += Q4_0Bytes, dx += dxStride, x0 += Q8_0Bytes, x1 += Q8_0Bytes, x2 += Q8_0Bytes, x3 += Q8_0Bytes)
            acc = SignedBlock4(Q4_0Signed(w, lowMask, eight), HalfConversion.Load(w), dx, x0, x1, x2, x3, acc);
        Scatter4(acc, y, yStride);
    }

    // ---------------------------------------------------------------- K-quants

    /// <summary>A token's share of one 64-element chunk of a K-quant super-block: two scaled 32-element dots.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ChunkStep(Vector256<byte> lo, Vector256<byte> hi, Vector256<short> scaleLo, Vector256<short> scaleHi, sbyte* q8, Vector256<int> sumi)
    {
        sumi += ScaledDot(lo, Vector256.Load(q8), scaleLo);
        return sumi + ScaledDot(hi, Vector256.Load(q8 + 32), scaleHi);
    }

    /// <summary>The Q8_K scales of four tokens' super-blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Q8KScales4(byte* x0, byte* x1, byte* x2, byte* x3)
        => Vector128.Create(Unsafe.ReadUnaligned<float>(x0), Unsafe.ReadUnaligned<float>(x1), Unsafe.ReadUnaligned<float>(x2), Unsafe.ReadUnaligned<float>(x3));

    /// <summary>Q4_K/Q5_K closing of a super-block for four tokens (lane t: token t): the canonical scale FMA, then the
    /// min-correction FMA.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> KQuantClose4(Vector256<int> s0, Vector256<int> s1, Vector256<int> s2, Vector256<int> s3, float d, float dmin, ulong mins,
                                                 byte* x0, byte* x1, byte* x2, byte* x3, Vector128<float> acc)
    {
        var dx = Q8KScales4(x0, x1, x2, x3);
        acc = Fma.MultiplyAdd(Sse2.ConvertToVector128Single(Sum4(s0, s1, s2, s3)), Vector128.Create(d) * dx, acc);
        var pairs = MinPairs(mins);
        var minSums = Sum4(MinProducts(pairs, x0), MinProducts(pairs, x1), MinProducts(pairs, x2), MinProducts(pairs, x3));
        return Fma.MultiplyAddNegated(Sse2.ConvertToVector128Single(minSums), Vector128.Create(dmin) * dx, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_KAvx2X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        var m4 = Vector256.Create((byte)0xF);
        Vector128<float> acc = default;
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
            acc = KQuantClose4(s0, s1, s2, s3, HalfConversion.Load(w), HalfConversion.Load(w + 2), mins, x0, x1, x2, x3, acc);
        }
        Scatter4(acc, y, yStride);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q5_KAvx2X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        var m4 = Vector256.Create((byte)0xF);
        var bit4 = Vector256.Create((byte)0x10);
        Vector128<float> acc = default;
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
            acc = KQuantClose4(s0, s1, s2, s3, HalfConversion.Load(w), HalfConversion.Load(w + 2), mins, x0, x1, x2, x3, acc);
        }
        Scatter4(acc, y, yStride);
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

    /// <summary>One token's Q6_K super-block total: Σ sc·Σ q·x − 32·Σ sc·Σ x, exact, as 8 int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6Total(Vector256<int> sumi, Vector256<short> scales16, byte* x)
        => sumi - Avx2.ShiftLeftLogical(Q6OffsetProducts(scales16, x), 5);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q6_KAvx2X4(byte* w, byte* act, long actRowBytes, float* dx, long dxStride, long n, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        Vector128<float> acc = default;
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
            var scales16 = Avx2.ConvertToVector256Int16(sc);
            var totals = Sum4(Q6Total(s0, scales16, x0), Q6Total(s1, scales16, x1), Q6Total(s2, scales16, x2), Q6Total(s3, scales16, x3));
            acc = Fma.MultiplyAdd(Sse2.ConvertToVector128Single(totals), Vector128.Create(HalfConversion.Load(w + 208)) * Q8KScales4(x0, x1, x2, x3), acc);
        }
        Scatter4(acc, y, yStride);
    }
}

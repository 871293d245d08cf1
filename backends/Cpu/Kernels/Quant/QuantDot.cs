using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// Dot product of one weight row (stored in its GGUF type) with one activation row. As in llama.cpp's CPU
/// backend, quantized weights meet activations quantized on the fly — Q8_0 for Q8_0/Q4_0 weights, Q8_K for
/// K-quants (see <see cref="ActivationType"/> and <see cref="ActivationQuantizer"/>) — and the inner loops are
/// exact integer multiply-adds with one float scale per block; F32/F16/BF16 weights meet float32 activations
/// with float FMA. Reads exactly the row's bytes, never past its end. Kernels are compiled fully optimized on
/// first use (AggressiveOptimization) so the first tokens do not run unoptimized tier-0 SIMD code.
/// </summary>
public static unsafe partial class QuantDot
{
    /// <summary>
    /// Initializes <see cref="HalfConversion"/> before any kernel is compiled. The kernels are compiled straight to
    /// optimized code on first call (no later re-JIT), and one compiled while <see cref="HalfConversion.Table"/> is still
    /// uninitialized keeps a class-initialization check and helper call inside its block loop, which spills the
    /// accumulators: that made whichever quantized kernel ran first in a process about 2–3× slower than the others.
    /// </summary>
    static QuantDot() => RuntimeHelpers.RunClassConstructor(typeof(HalfConversion).TypeHandle);

    /// <summary>Weight types with a dot kernel.</summary>
    public static bool IsSupported(GgmlType weightType) => weightType is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16
        or GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K;

    /// <summary>The format the activation row must be in for weights of <paramref name="weightType"/>:
    /// Q8_0 for Q8_0/Q4_0, Q8_K for K-quants, F32 for float weights.</summary>
    public static GgmlType ActivationType(GgmlType weightType) => weightType switch
    {
        GgmlType.F32 or GgmlType.F16 or GgmlType.BF16 => GgmlType.F32,
        GgmlType.Q8_0 or GgmlType.Q4_0 => GgmlType.Q8_0,
        GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K => GgmlType.Q8_K,
        _ => throw new NotSupportedException($"no CPU dot kernel for weight type {weightType}"),
    };

    /// <summary>
    /// Σ w[i]·x[i] over <paramref name="cols"/> elements. <paramref name="weights"/> is one row of
    /// <paramref name="weightType"/>; <paramref name="activation"/> is the matching row in
    /// <see cref="ActivationType"/> format (floats for F32/F16/BF16 weights).
    /// </summary>
    public static float Dot(GgmlType weightType, byte* weights, void* activation, long cols)
        => Dot(weightType, weights, activation, cols, KernelIsaSupport.Best);

    internal static float Dot(GgmlType weightType, byte* weights, void* activation, long cols, KernelIsa isa)
    {
        var kernel = Resolve(weightType, isa);
        int block = GgmlTypes.Get(weightType).BlockSize;
        if (cols < 0 || cols % block != 0)
            throw new ArgumentException($"dot: a {weightType} row of {cols} elements is not a whole number of {block}-element blocks", nameof(cols));
        return kernel(weights, activation, cols);
    }

    /// <summary>The kernel for a weight type at an instruction-set level; resolved once per matmul, not per row. Every kernel
    /// performs the canonical arithmetic of its type at its level (QuantDot.Lanes.cs); for Q4_0 and Q8_0 the AVX-512 level uses
    /// the AVX2 single-row kernels (its speed comes from the multi-row kernels).</summary>
    internal static delegate*<byte*, void*, long, float> Resolve(GgmlType weightType, KernelIsa isa)
    {
        KernelIsaSupport.Require(isa);
        return (weightType, isa) switch
        {
            (GgmlType.F32, KernelIsa.Scalar) => &F32Scalar,
            (GgmlType.F32, KernelIsa.Avx2) => &F32Avx2,
            (GgmlType.F32, KernelIsa.Avx512) => &F32Avx512,
            (GgmlType.F16, KernelIsa.Scalar) => &F16Scalar,
            (GgmlType.F16, KernelIsa.Avx2) => &F16Avx2,
            (GgmlType.F16, KernelIsa.Avx512) => &F16Avx512,
            (GgmlType.BF16, KernelIsa.Scalar) => &BF16Scalar,
            (GgmlType.BF16, KernelIsa.Avx2) => &BF16Avx2,
            (GgmlType.BF16, KernelIsa.Avx512) => &BF16Avx512,
            (GgmlType.Q8_0, KernelIsa.Scalar) => &Q8_0Scalar,
            (GgmlType.Q8_0, KernelIsa.Avx2) => &Q8_0Avx2,
            (GgmlType.Q8_0, KernelIsa.Avx512) => &Q8_0Avx512,
            (GgmlType.Q4_0, KernelIsa.Scalar) => &Q4_0Scalar,
            (GgmlType.Q4_0, KernelIsa.Avx2) => &Q4_0Avx2,
            (GgmlType.Q4_0, KernelIsa.Avx512) => &Q4_0Avx2,
            (GgmlType.Q4_K, KernelIsa.Scalar) => &Q4_KScalar,
            (GgmlType.Q4_K, KernelIsa.Avx2) => &KRow<Q4KAvx2>,
            (GgmlType.Q4_K, KernelIsa.Avx512) => &KRow<Q4KAvx512>,
            (GgmlType.Q5_K, KernelIsa.Scalar) => &Q5_KScalar,
            (GgmlType.Q5_K, KernelIsa.Avx2) => &KRow<Q5KAvx2>,
            (GgmlType.Q5_K, KernelIsa.Avx512) => &KRow<Q5KAvx512>,
            (GgmlType.Q6_K, KernelIsa.Scalar) => &Q6_KScalar,
            (GgmlType.Q6_K, KernelIsa.Avx2) => &KRow<Q6KAvx2>,
            (GgmlType.Q6_K, KernelIsa.Avx512) => &KRow<Q6KAvx512>,
            _ => throw new NotSupportedException($"no CPU dot kernel for weight type {weightType}"),
        };
    }

    // ---------------------------------------------------------------- float weights

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float F32Scalar(byte* w, void* a, long n)
    {
        float* x = (float*)w, y = (float*)a;
        float s = 0;
        for (long i = 0; i < n; i++) s += x[i] * y[i];
        return s;
    }

    /// <summary>The canonical F32 order: two 8-lane accumulators over 16-element steps, one 8-element step into the first,
    /// <c>Vector256.Sum(acc0 + acc1)</c>, then the remaining elements one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float F32Avx2(byte* w, void* a, long n)
    {
        float* x = (float*)w, y = (float*)a;
        Vector256<float> acc0 = default, acc1 = default;
        long i = 0;
        for (; i + 16 <= n; i += 16)
        {
            acc0 = Fma.MultiplyAdd(Vector256.Load(x + i), Vector256.Load(y + i), acc0);
            acc1 = Fma.MultiplyAdd(Vector256.Load(x + i + 8), Vector256.Load(y + i + 8), acc1);
        }
        if (i + 8 <= n)
        {
            acc0 = Fma.MultiplyAdd(Vector256.Load(x + i), Vector256.Load(y + i), acc0);
            i += 8;
        }
        return F32Tail(Vector256.Sum(acc0 + acc1), x, y, i, n);
    }

    /// <summary>The canonical F32 order at the AVX-512 level: two 16-lane accumulators over 32-element steps, one 16-element step
    /// into the first, <c>Vector512.Sum(acc0 + acc1)</c>, then the remaining elements one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float F32Avx512(byte* w, void* a, long n)
    {
        float* x = (float*)w, y = (float*)a;
        Vector512<float> acc0 = default, acc1 = default;
        long i = 0;
        for (; i + 32 <= n; i += 32)
        {
            PrefetchSpan((byte*)(x + i) + StreamPrefetchBytes, 128);
            acc0 = Avx512F.FusedMultiplyAdd(Vector512.Load(x + i), Vector512.Load(y + i), acc0);
            acc1 = Avx512F.FusedMultiplyAdd(Vector512.Load(x + i + 16), Vector512.Load(y + i + 16), acc1);
        }
        for (; i + 16 <= n; i += 16) acc0 = Avx512F.FusedMultiplyAdd(Vector512.Load(x + i), Vector512.Load(y + i), acc0);
        float s = Vector512.Sum(acc0 + acc1);
        for (; i < n; i++) s += x[i] * y[i];
        return s;
    }

    /// <summary><paramref name="s"/> plus x[k]·y[k] for k from <paramref name="i"/> to <paramref name="n"/>, one element at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float F32Tail(float s, float* x, float* y, long i, long n)
    {
        for (; i < n; i++) s += x[i] * y[i];
        return s;
    }

    /// <inheritdoc cref="F32Tail"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float F16Tail(float s, ushort* x, float* y, long i, long n)
    {
        for (; i < n; i++) s += HalfConversion.Table[x[i]] * y[i];
        return s;
    }

    /// <inheritdoc cref="F32Tail"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float BF16Tail(float s, ushort* x, float* y, long i, long n)
    {
        for (; i < n; i++) s += BF16(x[i]) * y[i];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float F16Scalar(byte* w, void* a, long n)
    {
        ushort* x = (ushort*)w;
        float* y = (float*)a;
        float s = 0;
        for (long i = 0; i < n; i++) s += HalfConversion.Table[x[i]] * y[i];
        return s;
    }

    /// <summary>The canonical F16 order: one 8-lane accumulator, <c>Vector256.Sum</c>, then the remaining elements one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float F16Avx2(byte* w, void* a, long n)
    {
        ushort* x = (ushort*)w;
        float* y = (float*)a;
        Vector256<float> acc = default;
        long i = 0;
        for (; i + 8 <= n; i += 8)
            acc = Fma.MultiplyAdd(HalfConversion.ToSingle(Avx2.ConvertToVector256Int32(x + i).AsUInt32()), Vector256.Load(y + i), acc);
        return F16Tail(Vector256.Sum(acc), x, y, i, n);
    }

    /// <summary>The canonical F16 order at the AVX-512 level, as <see cref="F32Avx512"/>'s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float F16Avx512(byte* w, void* a, long n)
    {
        ushort* x = (ushort*)w;
        float* y = (float*)a;
        Vector512<float> acc0 = default, acc1 = default; // two chains hide the FMA latency
        long i = 0;
        for (; i + 32 <= n; i += 32)
        {
            Sse.Prefetch0((byte*)(x + i) + StreamPrefetchBytes);
            acc0 = Avx512F.FusedMultiplyAdd(HalfConversion.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(x + i))), Vector512.Load(y + i), acc0);
            acc1 = Avx512F.FusedMultiplyAdd(HalfConversion.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(x + i + 16))), Vector512.Load(y + i + 16), acc1);
        }
        for (; i + 16 <= n; i += 16)
            acc0 = Avx512F.FusedMultiplyAdd(HalfConversion.ToSingle(Avx512F.ConvertToVector512UInt32(Vector256.Load(x + i))), Vector512.Load(y + i), acc0);
        float s = Vector512.Sum(acc0 + acc1);
        for (; i < n; i++) s += HalfConversion.Table[x[i]] * y[i];
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float BF16(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float BF16Scalar(byte* w, void* a, long n)
    {
        ushort* x = (ushort*)w;
        float* y = (float*)a;
        float s = 0;
        for (long i = 0; i < n; i++) s += BF16(x[i]) * y[i];
        return s;
    }

    /// <summary>The canonical BF16 order, as <see cref="F16Avx2"/>'s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float BF16Avx2(byte* w, void* a, long n)
    {
        ushort* x = (ushort*)w;
        float* y = (float*)a;
        Vector256<float> acc = default;
        long i = 0;
        for (; i + 8 <= n; i += 8)
            acc = Fma.MultiplyAdd((Avx2.ConvertToVector256Int32(x + i).AsUInt32() << 16).AsSingle(), Vector256.Load(y + i), acc);
        return BF16Tail(Vector256.Sum(acc), x, y, i, n);
    }

    /// <summary>The canonical BF16 order at the AVX-512 level: one 16-lane accumulator, <c>Vector512.Sum</c>, then the remaining
    /// elements one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float BF16Avx512(byte* w, void* a, long n)
    {
        ushort* x = (ushort*)w;
        float* y = (float*)a;
        Vector512<float> acc = default;
        long i = 0;
        for (; i + 16 <= n; i += 16)
        {
            Sse.Prefetch0((byte*)(x + i) + StreamPrefetchBytes);
            acc = Avx512F.FusedMultiplyAdd((Avx512F.ConvertToVector512UInt32(Vector256.Load(x + i)) << 16).AsSingle(), Vector512.Load(y + i), acc);
        }
        float s = Vector512.Sum(acc);
        for (; i < n; i++) s += BF16(x[i]) * y[i];
        return s;
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// Quantizes float activation rows on the fly to Q8_0 (for Q8_0/Q4_0 weights) or Q8_K (for K-quant
/// weights) so the dot kernels can use integer multiply-adds. Writes into caller-provided scratch.
/// The arithmetic is, operation for operation, the reference <c>Quantizer</c>'s in PluginEngine.Core
/// (max |x|, d = max/127, q = round-half-even(x * inverse), clamp ±127), so both produce identical bytes.
/// </summary>
public static unsafe class ActivationQuantizer
{
    private const int QK = 32, QKK = 256, Q8_0Bytes = 34, Q8_KBytes = 292;

    /// <summary>Quantizes <paramref name="n"/> floats (a multiple of the type's block) into <paramref name="dst"/>
    /// as <paramref name="activationType"/> (Q8_0 or Q8_K). <paramref name="dst"/> needs <c>RowSize(type, n)</c> bytes.</summary>
    public static void Quantize(GgmlType activationType, float* x, byte* dst, long n)
        => Quantize(activationType, x, dst, n, KernelIsaSupport.Best);

    internal static void Quantize(GgmlType activationType, float* x, byte* dst, long n, KernelIsa isa)
    {
        if (n > 0 && (x == null || dst == null)) throw new ArgumentNullException(x == null ? nameof(x) : nameof(dst));
        switch (activationType)
        {
            case GgmlType.Q8_0: QuantizeRowQ8_0(x, dst, n, isa); break;
            case GgmlType.Q8_K: QuantizeRowQ8_K(x, dst, n, isa); break;
            default: throw new NotSupportedException($"activation quantization to {activationType} is not supported (Q8_0 and Q8_K are)");
        }
    }

    /// <summary>Float row → Q8_0 blocks (f16 d, 32 int8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void QuantizeRowQ8_0(float* x, byte* dst, long n, KernelIsa isa)
    {
        if (n % QK != 0) throw new ArgumentException($"Q8_0 activation row of {n} elements is not a multiple of {QK}", nameof(n));
        KernelIsaSupport.Require(isa);
        for (long b = 0; b < n / QK; b++, x += QK, dst += Q8_0Bytes)
        {
            float amax = isa == KernelIsa.Scalar ? MaxAbsScalar(x, QK) : MaxAbs256(x, QK);
            float d = amax / 127f;
            float id = d != 0 ? 1f / d : 0f;
            Unsafe.WriteUnaligned(dst, HalfConversion.FromSingle(d));
            if (isa == KernelIsa.Scalar) RoundScalar(x, (sbyte*)dst + 2, QK, id);
            else Round256(x, (sbyte*)dst + 2, QK, id);
        }
    }

    /// <summary>Float row → Q8_K blocks (f32 d, 256 int8, 16 int16 sums of 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void QuantizeRowQ8_K(float* x, byte* dst, long n, KernelIsa isa)
    {
        if (n % QKK != 0) throw new ArgumentException($"Q8_K activation row of {n} elements is not a multiple of {QKK}", nameof(n));
        KernelIsaSupport.Require(isa);
        for (long b = 0; b < n / QKK; b++, x += QKK, dst += Q8_KBytes)
        {
            float amax = isa switch
            {
                KernelIsa.Scalar => MaxAbsScalar(x, QKK),
                KernelIsa.Avx2 => MaxAbs256(x, QKK),
                _ => MaxAbs512(x, QKK),
            };
            float d = amax / 127f;
            float id = amax != 0 ? 127f / amax : 0f;
            Unsafe.WriteUnaligned(dst, d);
            sbyte* qs = (sbyte*)dst + 4;
            if (isa == KernelIsa.Scalar) RoundScalar(x, qs, QKK, id);
            else Round256(x, qs, QKK, id);
            short* bsums = (short*)(dst + 260);
            for (int i = 0; i < 16; i++)
            {
                int sum;
                if (isa == KernelIsa.Scalar)
                {
                    sum = 0;
                    for (int l = 0; l < 16; l++) sum += qs[16 * i + l];
                }
                else
                {
                    sum = Vector128.Sum(Vector128.WidenLower(Vector128.WidenLower(Vector128.Load(qs + 16 * i))) +
                                        Vector128.WidenUpper(Vector128.WidenLower(Vector128.Load(qs + 16 * i))) +
                                        Vector128.WidenLower(Vector128.WidenUpper(Vector128.Load(qs + 16 * i))) +
                                        Vector128.WidenUpper(Vector128.WidenUpper(Vector128.Load(qs + 16 * i))));
                }
                Unsafe.WriteUnaligned(bsums + i, (short)sum);
            }
        }
    }

    private static float MaxAbsScalar(float* x, int n)
    {
        float amax = 0;
        for (int i = 0; i < n; i++) amax = MathF.Max(amax, MathF.Abs(x[i]));
        return amax;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxAbs256(float* x, int n)
    {
        // vmaxps directly: Vector256.Max and MathF.Max follow IEEE 754-2019 maximum (NaN and −0 rules), several instructions
        // each, and every value here is already non-negative.
        var m = Vector256<float>.Zero;
        for (int i = 0; i < n; i += 8) m = Avx.Max(m, Vector256.Abs(Vector256.Load(x + i)));
        var h = Sse.Max(m.GetLower(), m.GetUpper());
        h = Sse.Max(h, Sse.MoveHighToLow(h, h));
        return Sse.MaxScalar(h, Sse.Shuffle(h, h, 1)).ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float MaxAbs512(float* x, int n)
    {
        var m = Vector512<float>.Zero;
        for (int i = 0; i < n; i += 16) m = Vector512.Max(m, Vector512.Abs(Vector512.Load(x + i)));
        var h8 = Vector256.Max(m.GetLower(), m.GetUpper());
        var h = Vector128.Max(h8.GetLower(), h8.GetUpper());
        return MathF.Max(MathF.Max(h[0], h[1]), MathF.Max(h[2], h[3]));
    }

    private static void RoundScalar(float* x, sbyte* q, int n, float id)
    {
        for (int i = 0; i < n; i++)
            q[i] = (sbyte)Math.Clamp((int)MathF.Round(x[i] * id, MidpointRounding.ToEven), -127, 127);
    }

    /// <summary>Vector rounding is round-half-even (the processor's default mode), like the scalar path.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Round256(float* x, sbyte* q, int n, float id)
    {
        var vid = Vector256.Create(id);
        var lo = Vector256.Create(-127);
        var hi = Vector256.Create(127);
        for (int i = 0; i < n; i += 32)
        {
            var a = Vector256.Clamp(Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + i) * vid)), lo, hi);
            var b = Vector256.Clamp(Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + i + 8) * vid)), lo, hi);
            var c = Vector256.Clamp(Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + i + 16) * vid)), lo, hi);
            var d = Vector256.Clamp(Vector256.ConvertToInt32(Vector256.Round(Vector256.Load(x + i + 24) * vid)), lo, hi);
            Vector256.Narrow(Vector256.Narrow(a, b), Vector256.Narrow(c, d)).Store(q + i);
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// Stores float K/V rows into a quantized KV cache (the CPU queue's <c>Convert</c> to Q8_0 or Q4_0;
/// docs/batching.md#quantized-kv-cache), block by block exactly as the GGUF quantizers write those blocks:
/// <list type="bullet">
/// <item>Q8_0: d = max|x| / 127, q = round(x / d) (half to even, as ggml's vector quantizer rounds; computed as x · (1/d)),
/// the same operations as the activation quantizer (<see cref="ActivationQuantizer"/>, which it calls).</item>
/// <item>Q4_0: m = the element of largest magnitude with its sign (the first one on ties), d = m / −8,
/// q = min(15, (int)(x · (1/d) + 8.5)) with the unrounded d; element j in the low nibble of byte j, element j + 16 in its high
/// nibble. The vector path performs the same operations per element, so every level writes the same bytes.</item>
/// </list>
/// Each block depends only on its own 32 elements, so a token's cache row is the same bytes whatever else is in the batch.
/// </summary>
public static unsafe class CacheQuantizer
{
    private const int QK = 32, Q4_0Bytes = 18;

    /// <summary>Cache types this quantizer writes.</summary>
    public static bool IsSupported(GgmlType type) => type is GgmlType.Q8_0 or GgmlType.Q4_0;

    /// <summary>Quantizes <paramref name="n"/> floats (a whole number of 32-element blocks) into <paramref name="dst"/>
    /// (<c>RowSize(type, n)</c> bytes).</summary>
    public static void Quantize(GgmlType type, float* x, byte* dst, long n) => Quantize(type, x, dst, n, KernelIsaSupport.Best);

    internal static void Quantize(GgmlType type, float* x, byte* dst, long n, KernelIsa isa)
    {
        if (n % QK != 0) throw new ArgumentException($"a {type} KV cache stores blocks of {QK} elements; {n} elements is not a whole number of blocks", nameof(n));
        switch (type)
        {
            case GgmlType.Q8_0: ActivationQuantizer.QuantizeRowQ8_0(x, dst, n, isa); break;
            case GgmlType.Q4_0: QuantizeRowQ4_0(x, dst, n, isa); break;
            default: throw new NotSupportedException($"a KV cache of {type} is not supported (Q8_0 and Q4_0 are)");
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void QuantizeRowQ4_0(float* x, byte* dst, long n, KernelIsa isa)
    {
        KernelIsaSupport.Require(isa);
        for (long b = 0; b < n / QK; b++, x += QK, dst += Q4_0Bytes)
        {
            float max = isa == KernelIsa.Scalar ? SignedMaxScalar(x) : SignedMax256(x);
            float d = max / -8f;
            float id = d != 0 ? 1f / d : 0f;
            Unsafe.WriteUnaligned(dst, HalfConversion.FromSingle(d));
            if (isa == KernelIsa.Scalar) PackScalar(x, dst + 2, id);
            else Pack256(x, dst + 2, id);
        }
    }

    /// <summary>The first element of largest magnitude, with its sign (0 when every element is zero).</summary>
    private static float SignedMaxScalar(float* x)
    {
        float amax = 0, max = 0;
        for (int i = 0; i < QK; i++)
        {
            float a = MathF.Abs(x[i]);
            if (amax < a) { amax = a; max = x[i]; }
        }
        return max;
    }

    /// <summary><see cref="SignedMaxScalar"/> with vectors: the largest magnitude, then the first lane that holds it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float SignedMax256(float* x)
    {
        var a0 = Vector256.Abs(Vector256.Load(x)); var a1 = Vector256.Abs(Vector256.Load(x + 8));
        var a2 = Vector256.Abs(Vector256.Load(x + 16)); var a3 = Vector256.Abs(Vector256.Load(x + 24));
        var m = Avx.Max(Avx.Max(a0, a1), Avx.Max(a2, a3));
        var h = Sse.Max(m.GetLower(), m.GetUpper());
        h = Sse.Max(h, Sse.MoveHighToLow(h, h));
        float amax = Sse.MaxScalar(h, Sse.Shuffle(h, h, 1)).ToScalar();
        if (amax == 0) return 0; // as the scalar loop: no element beats the initial zero
        var target = Vector256.Create(amax);
        uint mask = Vector256.Equals(a0, target).ExtractMostSignificantBits()
                    | Vector256.Equals(a1, target).ExtractMostSignificantBits() << 8
                    | Vector256.Equals(a2, target).ExtractMostSignificantBits() << 16
                    | Vector256.Equals(a3, target).ExtractMostSignificantBits() << 24;
        return x[System.Numerics.BitOperations.TrailingZeroCount(mask)];
    }

    private static void PackScalar(float* x, byte* qs, float id)
    {
        for (int j = 0; j < QK / 2; j++)
        {
            int q0 = Math.Min(15, (int)(x[j] * id + 8.5f));
            int q1 = Math.Min(15, (int)(x[j + QK / 2] * id + 8.5f));
            qs[j] = (byte)(q0 | (q1 << 4));
        }
    }

    /// <summary>Two 8-element halves of the low and high nibbles at a time; products and sums stay separate (no FMA), as in
    /// <see cref="PackScalar"/>, and the conversion truncates as the scalar cast does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Pack256(float* x, byte* qs, float id)
    {
        var vid = Vector256.Create(id);
        var b0 = Level(x, vid) | (Level(x + 16, vid) << 4);     // bytes 0..7
        var b1 = Level(x + 8, vid) | (Level(x + 24, vid) << 4); // bytes 8..15
        var words = Vector256.Narrow(b0.AsUInt32(), b1.AsUInt32());
        Vector256.Narrow(words, words).GetLower().Store(qs);
    }

    /// <summary>min(15, (int)(x · id + 8.5)) for 8 elements.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Level(float* x, Vector256<float> id)
        => Vector256.Min(Avx.ConvertToVector256Int32WithTruncation(Avx.Add(Avx.Multiply(Vector256.Load(x), id), Vector256.Create(8.5f))), Vector256.Create(15));
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PluginEngine.Backends.Cpu.Kernels;

// Q8_0 and Q4_0 weights against Q8_0 activations. Both are 32-element blocks with one f16 scale;
// per block the kernel forms the exact int32 Σ qw·qa and adds float(dw·da) · that sum.
public static unsafe partial class QuantDot
{
    private const int Q8_0Bytes = 34, Q4_0Bytes = 18;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0Scalar(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        float s = 0;
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, x += Q8_0Bytes)
        {
            int sumi = 0;
            for (int i = 0; i < 32; i++) sumi += (sbyte)w[2 + i] * (sbyte)x[2 + i];
            s = MathF.FusedMultiplyAdd(sumi, HalfConversion.Load(w) * HalfConversion.Load(x), s);
        }
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_0Scalar(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        float s = 0;
        for (long b = 0; b < n / 32; b++, w += Q4_0Bytes, x += Q8_0Bytes)
        {
            int sumi = 0;
            for (int j = 0; j < 16; j++)
            {
                int q = w[2 + j];
                sumi += ((q & 0xF) - 8) * (sbyte)x[2 + j] + ((q >> 4) - 8) * (sbyte)x[2 + 16 + j];
            }
            s = MathF.FusedMultiplyAdd(sumi, HalfConversion.Load(w) * HalfConversion.Load(x), s);
        }
        return s;
    }

    /// <summary>Σ over 32 lanes of u·s as 8 int32 lanes (vpmaddubsw then vpmaddwd with ones).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotU8S8(Vector256<byte> u, Vector256<sbyte> s)
        => Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256<short>.One);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> DotU8S8(Vector512<byte> u, Vector512<sbyte> s)
        => Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u, s), Vector512<short>.One);

    /// <summary>One Q8_0 block: vpmaddubsw needs an unsigned operand, so |w| meets sign(w)·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q8_0Block256(byte* w, byte* x)
    {
        var qw = Vector256.Load((sbyte*)w + 2);
        var qx = Vector256.Load((sbyte*)x + 2);
        return DotU8S8(Avx2.Abs(qw), Avx2.Sign(qx, qw));
    }

    /// <summary>One Q4_0 block: nibbles 0..15 (low nibbles are elements 0..15, high 16..31); Σ(q-8)·x = Σq·x − Σ8·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q4_0Block256(byte* w, byte* x)
    {
        var packed = Vector128.Load(w + 2);
        var q = Vector256.Create(packed & Vector128.Create((byte)0xF), Vector128.ShiftRightLogical(packed, 4));
        var qx = Vector256.Load((sbyte*)x + 2);
        var p = Avx2.MultiplyAddAdjacent(q, qx) - Avx2.MultiplyAddAdjacent(Vector256.Create((byte)8), qx);
        return Avx2.MultiplyAddAdjacent(p, Vector256<short>.One);
    }

    /// <summary>One row against one token: the block sums reduced to a scalar, one scalar FMA per block (the canonical
    /// order). Used for rows and tokens left over by the multi-row and multi-token kernels, at the AVX2 and AVX-512 levels.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0Avx2(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        Vector128<float> acc = default;
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, x += Q8_0Bytes)
            acc = ScalarStep(Sum1(Q8_0Block256(w, x)), HalfConversion.Load(w) * HalfConversion.Load(x), acc);
        return acc.ToScalar();
    }

    /// <inheritdoc cref="Q8_0Avx2"/>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_0Avx2(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        Vector128<float> acc = default;
        for (long b = 0; b < n / 32; b++, w += Q4_0Bytes, x += Q8_0Bytes)
            acc = ScalarStep(Sum1(Q4_0Block256(w, x)), HalfConversion.Load(w) * HalfConversion.Load(x), acc);
        return acc.ToScalar();
    }
}

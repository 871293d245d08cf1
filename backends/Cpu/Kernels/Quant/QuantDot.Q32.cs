using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PluginEngine.Backends.Cpu.Kernels;

// Q8_0 and Q4_0 weights against Q8_0 activations. Both are 32-element blocks with one f16 scale;
// per block the kernel forms the exact int32 Σ qw·qx and accumulates acc = fma(float(Σ), dw·dx, acc), block by block
// (the canonical order of QuantDot.Lanes.cs): Q4_0 into one accumulator, Q8_0 into two that take the blocks in turn
// (even blocks, odd blocks; y = even + odd).
public static unsafe partial class QuantDot
{
    private const int Q8_0Bytes = 34, Q4_0Bytes = 18;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0Scalar(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        float s = 0, other = 0;
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, x += Q8_0Bytes)
        {
            int sumi = 0;
            for (int i = 0; i < 32; i++) sumi += (sbyte)w[2 + i] * (sbyte)x[2 + i];
            s = MathF.FusedMultiplyAdd(sumi, HalfConversion.Load(w) * HalfConversion.Load(x), s);
            (s, other) = (other, s); // the next block goes to the other accumulator
        }
        return s + other;
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
        Vector128<float> acc = default, other = default;
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, x += Q8_0Bytes)
        {
            acc = ScalarStep(Sum1(Q8_0Block256(w, x)), HalfConversion.Load(w) * HalfConversion.Load(x), acc);
            (acc, other) = (other, acc);
        }
        return acc.ToScalar() + other.ToScalar();
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

    /// <summary>
    /// Q8_0 at the AVX-512 level, one row: two blocks per 512-bit register for the integer sums, reduced to the two blocks'
    /// sums, which go to the even and odd accumulators (lanes 0 and 1) with one FMA. Generation of Q8_0 (34 bytes per 32
    /// elements) is bound by reading the matrix, and one row at a time — one sequential stream — read a streamed matrix about 25%
    /// faster than four interleaved rows did; the two accumulators keep one row from waiting on one FMA chain.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0Avx512(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        long blocks = n / 32, b = 0;
        Vector128<float> acc = default; // lane 0: even blocks, lane 1: odd blocks
        // Four blocks per step: their sums share one reduction; then blocks b, b + 1 and b + 2, b + 3 in two FMAs.
        for (; b + 4 <= blocks; b += 4, w += 4 * Q8_0Bytes, x += 4 * Q8_0Bytes)
        {
            PrefetchSpan(w + StreamPrefetchBytes, 4 * Q8_0Bytes);
            var s01 = Q8_0Pair512(w, x);
            var s23 = Q8_0Pair512(w + 2 * Q8_0Bytes, x + 2 * Q8_0Bytes);
            var f = Sse2.ConvertToVector128Single(Sum4(s01.GetLower(), s01.GetUpper(), s23.GetLower(), s23.GetUpper()));
            var scales = Vector128.Create(HalfConversion.Load(w), HalfConversion.Load(w + Q8_0Bytes), HalfConversion.Load(w + 2 * Q8_0Bytes), HalfConversion.Load(w + 3 * Q8_0Bytes))
                       * Vector128.Create(HalfConversion.Load(x), HalfConversion.Load(x + Q8_0Bytes), HalfConversion.Load(x + 2 * Q8_0Bytes), HalfConversion.Load(x + 3 * Q8_0Bytes));
            acc = Fma.MultiplyAdd(f, scales.WithElement(2, 0f).WithElement(3, 0f), acc);
            acc = Fma.MultiplyAdd(Sse.MoveHighToLow(f, f), Sse.MoveHighToLow(Vector128<float>.Zero, scales), acc);
        }
        if (b + 2 <= blocks)
        {
            var s01 = Q8_0Pair512(w, x);
            var f = Sse2.ConvertToVector128Single(Sum2(s01.GetLower(), s01.GetUpper()));
            acc = Fma.MultiplyAdd(f, Vector128.Create(HalfConversion.Load(w) * HalfConversion.Load(x), HalfConversion.Load(w + Q8_0Bytes) * HalfConversion.Load(x + Q8_0Bytes), 0, 0), acc);
            b += 2; w += 2 * Q8_0Bytes; x += 2 * Q8_0Bytes;
        }
        float odd = acc.GetElement(1);
        if (b < blocks) acc = ScalarStep(Sum1(Q8_0Block256(w, x)), HalfConversion.Load(w) * HalfConversion.Load(x), acc); // an even block (lane 0 only)
        return acc.ToScalar() + odd;
    }

    /// <summary>Two Q8_0 blocks in one 512-bit register: the integer sums as 8 int32 lanes per block (block b in the low half).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Q8_0Pair512(byte* w, byte* x)
    {
        var qw = Join(Vector256.Load(w + 2), Vector256.Load(w + Q8_0Bytes + 2)).AsSByte();
        var qx = Join(Vector256.Load(x + 2), Vector256.Load(x + Q8_0Bytes + 2)).AsSByte();
        // |w| and x with w's sign; activations are clamped to ±127 so negating never overflows.
        var sx = Vector512.ConditionalSelect(Vector512.LessThan(qw, Vector512<sbyte>.Zero), Vector512<sbyte>.Zero - qx, qx);
        return Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(Vector512.Abs(qw).AsByte(), sx), Vector512<short>.One);
    }
}

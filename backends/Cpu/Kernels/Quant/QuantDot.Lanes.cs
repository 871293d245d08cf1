using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PluginEngine.Backends.Cpu.Kernels;

// Batch invariance (docs/batching.md#batch-invariance-on-the-cpu): every kernel that produces y[t, r] for a given weight row r
// and activation row t performs one canonical sequence of float operations, whatever path MatMul takes (one token, a few
// tokens, the repacked GEMM), so a token's output does not depend on the other tokens in its batch.
//
// Quantized weights (Q4_0, Q8_0, Q4_K, Q5_K, Q6_K): per block (32 elements) or super-block (256 elements) an exact integer
// sum, then float FMAs per block in block order into one accumulator per (row, token) that starts at 0:
//   Q4_0:       acc = fma(float(Σ qw·qx), dw·dx, acc)
//   Q4_K, Q5_K: acc = fma(float(Σ_j sc_j·Σ q·qx), d·dx, acc); acc = fma(−float(Σ_j m_j·Σ qx), dmin·dx, acc)
//   Q6_K:       acc = fma(float(Σ_i sc_i·Σ q·qx − 32·Σ_i sc_i·Σ qx), d·dx, acc)
// and y = acc; Q8_0 has two accumulators that take the blocks in turn (block b updates acc[b % 2] as Q4_0's step) and
// y = acc[0] + acc[1]: its generation reads 34 bytes per block and is fastest one row at a time (one sequential stream),
// where a single chain of FMAs would make a row wait on their latency. The integer sums are exact, so how they are formed (SIMD lanes over elements, vpmaddubsw pairs, repacked
// rows) does not matter; int → float conversion and the float products are deterministic. Kernels keep SIMD lanes over
// rows or tokens for the float part (the helpers below reduce several integer vectors to one vector of per-row or
// per-token sums), never over elements. This is the repacked GEMM's arithmetic (RepackedGemm's Finish), and the same at
// every ISA level (the scalar kernels use MathF.FusedMultiplyAdd).
//
// Float weights (F32, F16, BF16): the single-row kernel of each level is canonical for that level — at AVX2 8-lane
// accumulators over elements (two for F32), Vector256.Sum and a scalar tail; at AVX-512 16-lane accumulators (two for F32
// and F16), Vector512.Sum and a scalar tail; at the scalar level one sequential sum — and the multi-token kernels keep the
// same accumulators per token. Float results may therefore differ between levels, never between paths of one level.
public static unsafe partial class QuantDot
{
    /// <summary>The lane sums of two vectors, interleaved: [Σa, Σb] in the two low lanes of the result, exactly (integers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Sum2(Vector256<int> a, Vector256<int> b)
    {
        var ab = Avx2.HorizontalAdd(a, b);                 // [a01 a23 b01 b23 | a45 a67 b45 b67]
        var q = ab.GetLower() + ab.GetUpper();             // [a0145 a2367 b0145 b2367]
        return Ssse3.HorizontalAdd(q, q);                  // [Σa Σb Σa Σb]
    }

    /// <summary>The lane sums of four vectors: [Σa, Σb, Σc, Σd].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Sum4(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d)
    {
        var abcd = Avx2.HorizontalAdd(Avx2.HorizontalAdd(a, b), Avx2.HorizontalAdd(c, d)); // [a0-3 b0-3 c0-3 d0-3 | a4-7 … d4-7]
        return abcd.GetLower() + abcd.GetUpper();
    }

    /// <summary>The lane sums of eight vectors: [Σa, Σb, …, Σh].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Sum8(Vector256<int> a, Vector256<int> b, Vector256<int> c, Vector256<int> d,
                                       Vector256<int> e, Vector256<int> f, Vector256<int> g, Vector256<int> h)
    {
        var lo = Avx2.HorizontalAdd(Avx2.HorizontalAdd(a, b), Avx2.HorizontalAdd(c, d)); // [a..d low halves | a..d high halves]
        var hi = Avx2.HorizontalAdd(Avx2.HorizontalAdd(e, f), Avx2.HorizontalAdd(g, h));
        return Avx2.Permute2x128(lo, hi, 0x20) + Avx2.Permute2x128(lo, hi, 0x31);
    }

    /// <summary>Lane 0: the sum of the eight lanes of <paramref name="v"/>, exactly (integers); kept in a vector register, so the
    /// canonical FMA that follows needs no trip through a general register.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> Sum1(Vector256<int> v)
    {
        var q = v.GetLower() + v.GetUpper();
        q += Sse2.Shuffle(q, 0x4E);
        return q + Sse2.Shuffle(q, 0xB1);
    }

    /// <summary>The canonical step for one row and token: lane 0 of acc + float(lane 0 of <paramref name="sums"/>) · scale, one rounding.
    /// Only lane 0 of the result means anything (vfmadd…ss takes the other lanes from its first operand).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> ScalarStep(Vector128<int> sums, float scale, Vector128<float> acc)
        => Fma.MultiplyAddScalar(Sse2.ConvertToVector128Single(sums), Vector128.CreateScalarUnsafe(scale), acc);

    /// <summary>Two 256-bit halves as one 512-bit vector (an insert; <c>Vector512.Create(lo, hi)</c> went through the stack in loops).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<byte> Join(Vector256<byte> lo, Vector256<byte> hi) => Avx512F.InsertVector256(lo.ToVector512Unsafe(), hi, 1);

    /// <summary>Stores the four lanes of <paramref name="v"/> at y, y + stride, y + 2·stride, y + 3·stride.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Scatter4(Vector128<float> v, float* y, long stride)
    {
        y[0] = v.ToScalar(); y[stride] = v.GetElement(1); y[2 * stride] = v.GetElement(2); y[3 * stride] = v.GetElement(3);
    }

    /// <summary>Stores the eight lanes of <paramref name="v"/> at y + k·stride.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Scatter8(Vector256<float> v, float* y, long stride)
    {
        Scatter4(v.GetLower(), y, stride);
        Scatter4(v.GetUpper(), y + 4 * stride, stride);
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

// Multi-row dots for generation (one activation row against four consecutive weight rows). A single-row dot is
// latency-bound: its one float accumulator waits on the previous block's FMA, and every block re-reads and re-converts
// the activation's scale. Four rows share each activation block (its load, its f16 scale, its Σ8·x for Q4_0) and, for
// Q4_0/Q8_0, keep the float part in one vector whose lanes are the four rows: per block the four rows' integer sums are
// reduced to one vector (horizontal adds) and one FMA advances all four accumulators. Per row this is exactly the canonical
// arithmetic (QuantDot.Lanes.cs), so results equal the single-row kernels', the multi-token kernels' and the repacked
// GEMM's bit for bit. (BatchInvarianceTests and MultiRowKernelTests assert this.)
// Memory: a row is short (about 1 KiB for a 2048-wide Q4_0/Q4_K row), so four rows read side by side are four short streams
// that the hardware prefetcher never gets to track, and on a model that does not fit in the caches the four-row kernels ran
// slower than one row at a time. Each kernel therefore prefetches the next four rows as it goes (a 1/blocks share of them per
// block), which turns the matrix back into one sequential stream read ahead of use.
// K-quants are the exception to the interleaving: four rows' super-block work interleaved ran out of the 16 AVX2 registers
// (the JIT spilled inside the loop) and, at the AVX-512 level, ran a streamed matrix 10–25% slower than one row at a time.
// Their four-row kernel (QuantDot.KQuants.cs, KRows4) reads the rows one after another, one sequential stream (at the AVX2
// level prefetching the row four rows on), stores each super-block's integer sums on the stack and then runs the float part
// of the four rows with lanes over rows. (Q4_K generation in the cache went from 40 to 56 GFLOP/s and, streamed with 2
// threads, from about 55 to 75–88 GFLOP/s with the sequential rows, tools/MatMulBench on the 2-core EPYC.)
public static unsafe partial class QuantDot
{
    /// <summary>
    /// How far ahead of its reads a one-row generation kernel that streams its matrix sequentially (Q8_0, F32, F16 and BF16 at
    /// the AVX-512 level, the K-quants' four-row kernel there) asks for the bytes. Such a kernel is bound by the read, and on a
    /// 2-vCPU Intel Xeon VM (AVX-512, 18 GB/s plain read with 2 threads) the hardware prefetcher alone left it at 60–70 % of
    /// that: with 2 KiB of software prefetch, streamed Q8_0 went from 11.6–12.9 to 17.6–20.1 GB/s, Q4_K from 11.0–11.4 to
    /// 15.2–16.5, Q6_K from 12.8–13.0 to 17.6–18.9, F16 from 10.6–12.7 to 15.9–19.1 (tools/MatMulBench, 5632×2048 and
    /// 2048×5632, 2 threads; 1 KiB gained less, 4 KiB no more). In the caches it costs Q8_0 about 8 % (2048×2048, one thread).
    /// Measurements: docs/benchmarks.md (CPU, 2026-12-07).
    /// </summary>
    internal const int StreamPrefetchBytes = 2048;

    /// <summary>Prefetches <paramref name="bytes"/> bytes from <paramref name="p"/> into the caches (a hint: never faults).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void PrefetchSpan(byte* p, long bytes)
    {
        for (long o = 0; o < bytes; o += 64) Sse.Prefetch0(p + o);
    }

    /// <summary>Weight rows per call of a <see cref="ResolveMultiRow"/> kernel.</summary>
    internal const int MultiRowWidth = 4;

    /// <summary>
    /// The four-row kernel for a weight type: <c>y[r] = Dot(w + r * rowBytes, act)</c> for r &lt; <see cref="MultiRowWidth"/>,
    /// as <c>kernel(w, rowBytes, act, cols, y)</c>, bit for bit the level's single-row kernel; null where there is none, and
    /// callers then use <see cref="Resolve"/> per row. The quantized types have one at the AVX2 and AVX-512 levels (for Q4_0 at
    /// AVX-512 it replaced a single-row kernel bound by the latency of its one accumulator), except Q8_0 at AVX-512: four
    /// interleaved Q8_0 rows read a streamed matrix 25–35% slower than one row at a time (34 bytes per block: generation is bound
    /// by the read), so that level keeps a single-row kernel (<see cref="Q8_0Avx512"/>). The float types have none either: their
    /// single-row kernels stream one row at a time, and four interleaved rows ran a streamed F16 matrix a third slower.
    /// </summary>
    internal static delegate*<byte*, long, byte*, long, float*, void> ResolveMultiRow(GgmlType weightType, KernelIsa isa)
    {
        KernelIsaSupport.Require(isa);
        return (weightType, isa) switch
        {
            (_, KernelIsa.Scalar) => null,
            (GgmlType.Q4_0, _) => &Q4_0Avx2R4,
            (GgmlType.Q8_0, KernelIsa.Avx2) => &Q8_0Avx2R4,
            (GgmlType.Q4_K, KernelIsa.Avx2) => &KRows4<Q4KAvx2>,
            (GgmlType.Q4_K, _) => &KRows4<Q4KAvx512>,
            (GgmlType.Q5_K, KernelIsa.Avx2) => &KRows4<Q5KAvx2>,
            (GgmlType.Q5_K, _) => &KRows4<Q5KAvx512>,
            (GgmlType.Q6_K, KernelIsa.Avx2) => &KRows4<Q6KAvx2>,
            (GgmlType.Q6_K, _) => &KRows4<Q6KAvx512>,
            _ => null,
        };
    }

    /// <summary>Variable shifts that move the high nibbles of the upper 128-bit half down (low half unshifted).</summary>
    private static Vector256<uint> HighHalfNibbleShift => Vector256.Create(0u, 0, 0, 0, 4, 4, 4, 4);

    /// <summary>One Q4_0 block as 32 unsigned nibbles 0..15: elements 0..15 (low nibbles) then 16..31 (high nibbles).
    /// The 16 packed bytes are broadcast to both halves and the upper half shifted by 4 (one load, two ALU operations).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Q4_0Nibbles(byte* w, Vector256<uint> shift, Vector256<byte> lowMask)
        => Avx2.ShiftRightLogicalVariable(Avx2.BroadcastVector128ToVector256(w + 2).AsUInt32(), shift).AsByte() & lowMask;

    /// <summary>One row's integer sums for a Q4_0 block: Σ(q−8)·x = Σq·x − Σ8·x with the activation's Σ8·x shared by the rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q4_0RowSums(byte* w, Vector256<sbyte> qx, Vector256<short> eightX, Vector256<uint> shift, Vector256<byte> lowMask)
        => Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Q4_0Nibbles(w, shift, lowMask), qx) - eightX, Vector256<short>.One);

    /// <summary>The four rows' f16 block scales as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> RowScales4(byte* w0, byte* w1, byte* w2, byte* w3)
        => Vector128.Create(HalfConversion.Load(w0), HalfConversion.Load(w1), HalfConversion.Load(w2), HalfConversion.Load(w3));

    /// <summary>
    /// Q4_0 generation, four rows. With VNNI each row's block is one vpdpbusd of its unsigned nibbles with the activation,
    /// into accumulators that start at −8·Σx per lane (the −8 offset, shared by the rows); without it vpmaddubsw/vpmaddwd and a
    /// subtraction per row. The four rows' sums are reduced to one vector and one FMA advances the four accumulators. (The row
    /// scales through two gathers — the bit patterns, then the table — made the kernel 40% slower on an AMD EPYC than four table loads.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_0Avx2R4(byte* w, long rowBytes, byte* x, long n, float* y)
    {
        byte* w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes;
        var shift = HighHalfNibbleShift;
        var lowMask = Vector256.Create((byte)0xF);
        var eight = Vector256.Create((byte)8);
        byte* next = w + 4 * rowBytes;
        Vector128<float> acc = default; // lane r: row r
        for (long b = 0; b < n / 32; b++, w0 += Q4_0Bytes, w1 += Q4_0Bytes, w2 += Q4_0Bytes, w3 += Q4_0Bytes, x += Q8_0Bytes, next += 4 * Q4_0Bytes)
        {
            PrefetchSpan(next, 4 * Q4_0Bytes);
            var qx = Vector256.Load((sbyte*)x + 2);
            Vector128<int> sums;
            if (AvxVnni.IsSupported)
            {
                var offset = Vector256<int>.Zero - AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, eight, qx);
                sums = Sum4(AvxVnni.MultiplyWideningAndAdd(offset, Q4_0Nibbles(w0, shift, lowMask), qx), AvxVnni.MultiplyWideningAndAdd(offset, Q4_0Nibbles(w1, shift, lowMask), qx),
                            AvxVnni.MultiplyWideningAndAdd(offset, Q4_0Nibbles(w2, shift, lowMask), qx), AvxVnni.MultiplyWideningAndAdd(offset, Q4_0Nibbles(w3, shift, lowMask), qx));
            }
            else
            {
                var eightX = Avx2.MultiplyAddAdjacent(eight, qx);
                sums = Sum4(Q4_0RowSums(w0, qx, eightX, shift, lowMask), Q4_0RowSums(w1, qx, eightX, shift, lowMask),
                            Q4_0RowSums(w2, qx, eightX, shift, lowMask), Q4_0RowSums(w3, qx, eightX, shift, lowMask));
            }
            acc = Fma.MultiplyAdd(Sse2.ConvertToVector128Single(sums), RowScales4(w0, w1, w2, w3) * Vector128.Create(HalfConversion.Load(x)), acc);
        }
        acc.Store(y);
    }

    /// <summary>One row's integer sums for a Q8_0 block (|w| meets sign(w)·x, as in the single-row kernel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q8_0RowSums(byte* w, Vector256<sbyte> qx)
    {
        var qw = Vector256.Load((sbyte*)w + 2);
        return DotU8S8(Avx2.Abs(qw), Avx2.Sign(qx, qw));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q8_0Avx2R4(byte* w, long rowBytes, byte* x, long n, float* y)
    {
        byte* w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes;
        byte* next = w + 4 * rowBytes;
        Vector128<float> acc = default, other = default; // Q8_0's even and odd blocks
        for (long b = 0; b < n / 32; b++, w0 += Q8_0Bytes, w1 += Q8_0Bytes, w2 += Q8_0Bytes, w3 += Q8_0Bytes, x += Q8_0Bytes, next += 4 * Q8_0Bytes)
        {
            PrefetchSpan(next, 4 * Q8_0Bytes);
            var qx = Vector256.Load((sbyte*)x + 2);
            var sums = Sum4(Q8_0RowSums(w0, qx), Q8_0RowSums(w1, qx), Q8_0RowSums(w2, qx), Q8_0RowSums(w3, qx));
            acc = Fma.MultiplyAdd(Sse2.ConvertToVector128Single(sums), RowScales4(w0, w1, w2, w3) * Vector128.Create(HalfConversion.Load(x)), acc);
            (acc, other) = (other, acc);
        }
        (acc + other).Store(y);
    }
}

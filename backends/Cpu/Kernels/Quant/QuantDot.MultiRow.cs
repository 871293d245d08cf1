using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

// Multi-row dots for generation (one activation row against four consecutive weight rows). A single-row dot is
// latency-bound: its one float accumulator waits on the previous block's FMA, and every block re-reads and re-converts
// the activation's scale. Four rows give four independent chains and share each activation block (its load, its f16
// scale, its Σ8·x for Q4_0) across the rows, which is what lets generation run at memory speed.
// Per row, every kernel performs exactly the operations of the single-row AVX2 kernel in the same order (same integer
// block sums, same float accumulator updates, same final reduction), so results are bit-identical to it. (Tests assert this.)
// Memory: a row is short (about 1 KiB for a 2048-wide Q4_0/Q4_K row), so four rows read side by side are four short streams
// that the hardware prefetcher never gets to track, and on a model that does not fit in the caches the four-row kernels ran
// slower than one row at a time. Each kernel therefore prefetches the next four rows as it goes (a 1/blocks share of them per
// block), which turns the matrix back into one sequential stream read ahead of use.
// K-quants (Q4_K, Q6_K) are the exception to the interleaving: a 256-element super-block is long enough that a single row's
// loop has no latency problem, and interleaving four rows' super-block work (scales, mins, two accumulators each) ran out of
// the 16 AVX2 registers: the JIT spilled to the stack inside the loop. Their four-row kernels run the rows one after another,
// each prefetching the row four rows on, which keeps the single sequential stream. (Q4_K generation in the cache went from
// 40 to 56 GFLOP/s and, streamed with 2 threads, from about 55 to 75–88 GFLOP/s, tools/MatMulBench on the 2-core EPYC.)
public static unsafe partial class QuantDot
{
    /// <summary>Prefetches <paramref name="bytes"/> bytes from <paramref name="p"/> into the caches (a hint: never faults).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchSpan(byte* p, int bytes)
    {
        for (int o = 0; o < bytes; o += 64) Sse.Prefetch0(p + o);
    }

    /// <summary>Weight rows per call of a <see cref="ResolveMultiRow"/> kernel.</summary>
    internal const int MultiRowWidth = 4;

    /// <summary>
    /// The four-row kernel for a weight type: <c>y[r] = Dot(w + r * rowBytes, act)</c> for r &lt; <see cref="MultiRowWidth"/>,
    /// as <c>kernel(w, rowBytes, act, cols, y)</c>; null where there is none (scalar level, or a type without one), and callers
    /// then use <see cref="Resolve"/> per row. Only at the AVX2 level for now: the AVX-512 single-row kernels (two blocks per
    /// register) were measured on an AVX-512 machine and these four-row AVX2 kernels have not been yet, so that level keeps them.
    /// </summary>
    internal static delegate*<byte*, long, byte*, long, float*, void> ResolveMultiRow(GgmlType weightType, KernelIsa isa)
    {
        KernelIsaSupport.Require(isa);
        if (isa != KernelIsa.Avx2) return null;
        return weightType switch
        {
            GgmlType.Q4_0 => &Q4_0Avx2R4,
            GgmlType.Q8_0 => &Q8_0Avx2R4,
            GgmlType.Q4_K => &Q4_KAvx2R4,
            GgmlType.Q6_K => &Q6_KAvx2R4,
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

    /// <summary>One row's update for a Q4_0 block: Σ(q−8)·x = Σq·x − Σ8·x with the activation's Σ8·x shared by the rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Q4_0RowStep(byte* w, Vector256<sbyte> qx, Vector256<short> eightX, float dx, Vector256<uint> shift, Vector256<byte> lowMask, Vector256<float> acc)
    {
        var p = Avx2.MultiplyAddAdjacent(Q4_0Nibbles(w, shift, lowMask), qx) - eightX;
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(p, Vector256<short>.One)), Vector256.Create(HalfConversion.Load(w) * dx), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_0Avx2R4(byte* w, long rowBytes, byte* x, long n, float* y)
    {
        byte* w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes;
        var shift = HighHalfNibbleShift;
        var lowMask = Vector256.Create((byte)0xF);
        var eight = Vector256.Create((byte)8);
        byte* next = w + 4 * rowBytes;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        for (long b = 0; b < n / 32; b++, w0 += Q4_0Bytes, w1 += Q4_0Bytes, w2 += Q4_0Bytes, w3 += Q4_0Bytes, x += Q8_0Bytes, next += 4 * Q4_0Bytes)
        {
            PrefetchSpan(next, 4 * Q4_0Bytes);
            var qx = Vector256.Load((sbyte*)x + 2);
            var eightX = Avx2.MultiplyAddAdjacent(eight, qx);
            float dx = HalfConversion.Load(x);
            c0 = Q4_0RowStep(w0, qx, eightX, dx, shift, lowMask, c0);
            c1 = Q4_0RowStep(w1, qx, eightX, dx, shift, lowMask, c1);
            c2 = Q4_0RowStep(w2, qx, eightX, dx, shift, lowMask, c2);
            c3 = Q4_0RowStep(w3, qx, eightX, dx, shift, lowMask, c3);
        }
        y[0] = Vector256.Sum(c0); y[1] = Vector256.Sum(c1); y[2] = Vector256.Sum(c2); y[3] = Vector256.Sum(c3);
    }

    /// <summary>One row's update for a Q8_0 block (|w| meets sign(w)·x, as in the single-row kernel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Q8_0RowStep(byte* w, Vector256<sbyte> qx, float dx, Vector256<float> acc)
    {
        var qw = Vector256.Load((sbyte*)w + 2);
        var sumi = DotU8S8(Avx2.Abs(qw), Avx2.Sign(qx, qw));
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Create(HalfConversion.Load(w) * dx), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q8_0Avx2R4(byte* w, long rowBytes, byte* x, long n, float* y)
    {
        byte* w0 = w, w1 = w + rowBytes, w2 = w + 2 * rowBytes, w3 = w + 3 * rowBytes;
        byte* next = w + 4 * rowBytes;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        for (long b = 0; b < n / 32; b++, w0 += Q8_0Bytes, w1 += Q8_0Bytes, w2 += Q8_0Bytes, w3 += Q8_0Bytes, x += Q8_0Bytes, next += 4 * Q8_0Bytes)
        {
            PrefetchSpan(next, 4 * Q8_0Bytes);
            var qx = Vector256.Load((sbyte*)x + 2);
            float dx = HalfConversion.Load(x);
            c0 = Q8_0RowStep(w0, qx, dx, c0);
            c1 = Q8_0RowStep(w1, qx, dx, c1);
            c2 = Q8_0RowStep(w2, qx, dx, c2);
            c3 = Q8_0RowStep(w3, qx, dx, c3);
        }
        y[0] = Vector256.Sum(c0); y[1] = Vector256.Sum(c1); y[2] = Vector256.Sum(c2); y[3] = Vector256.Sum(c3);
    }

    /// <summary>
    /// Q4_K: the four rows one after another through the single-row loop (<see cref="Q4_KRowAvx2"/>), each prefetching the row
    /// four rows further on. Interleaving the rows super-block by super-block, as the Q4_0/Q8_0 kernels do, shares little here
    /// (the activation's loads are memory operands either way) and needed more than the 16 vector registers: the JIT spilled
    /// accumulators and constants to the stack inside the loop.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q4_KAvx2R4(byte* w, long rowBytes, byte* x, long n, float* y)
    {
        long blocks = n / 256;
        y[0] = Q4_KRowAvx2(w, x, blocks, w + 4 * rowBytes, prefetch: true);
        y[1] = Q4_KRowAvx2(w + rowBytes, x, blocks, w + 5 * rowBytes, prefetch: true);
        y[2] = Q4_KRowAvx2(w + 2 * rowBytes, x, blocks, w + 6 * rowBytes, prefetch: true);
        y[3] = Q4_KRowAvx2(w + 3 * rowBytes, x, blocks, w + 7 * rowBytes, prefetch: true);
    }

    /// <summary>Q6_K: as <see cref="Q4_KAvx2R4"/>, the rows in turn through the single-row loop, each prefetching four rows on.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Q6_KAvx2R4(byte* w, long rowBytes, byte* x, long n, float* y)
    {
        long blocks = n / 256;
        y[0] = Q6_KRowAvx2(w, x, blocks, w + 4 * rowBytes, prefetch: true);
        y[1] = Q6_KRowAvx2(w + rowBytes, x, blocks, w + 5 * rowBytes, prefetch: true);
        y[2] = Q6_KRowAvx2(w + 2 * rowBytes, x, blocks, w + 6 * rowBytes, prefetch: true);
        y[3] = Q6_KRowAvx2(w + 3 * rowBytes, x, blocks, w + 7 * rowBytes, prefetch: true);
    }
}

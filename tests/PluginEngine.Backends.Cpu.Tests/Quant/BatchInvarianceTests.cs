using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// Batch invariance of the CPU matmul (docs/batching.md#batch-invariance-on-the-cpu): a token's output row is bit for bit the
/// same whatever the number of token rows in the call (n = 1 takes the multi-row kernels, 2 ≤ n &lt; 8 the multi-token
/// kernels, n ≥ 8 the repacked GEMM for Q4_0, Q8_0, Q4_K and Q6_K), the token's position in the batch, the thread count and
/// the tiling. This is what lets concurrent requests batched into one forward pass each get the text they get alone.
/// </summary>
public unsafe class BatchInvarianceTests
{
    public static TheoryData<GgmlType, KernelIsa> TypesByIsa() => MultiTokenKernelTests.TypesByIsa();

    /// <summary>Token counts around every kernel width and path switch (4, 8, the repacked GEMM's 8, tiles of 8).</summary>
    private static readonly long[] TokenCounts = [1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 33];

    /// <summary>Row lengths that reach every tail: for float weights an odd count (a half step and scalar elements) and one that
    /// ends on a half step; for 32-element blocks an odd block count; for K-quants two and three super-blocks.</summary>
    private static long[] Cols(GgmlType type) => GgmlTypes.Get(type).BlockSize switch
    {
        1 => [768 + 13, 512 + 16],
        32 => [512, 544],
        _ => [512, 768],
    };

    private const long Rows = 37; // groups of 4 and of 8 with rows left over, and more than one row tile

    /// <summary><see cref="Rows"/> random rows of <paramref name="cols"/> elements quantized to <paramref name="wType"/>, in a guarded buffer.</summary>
    private static GuardedBuffer Weights(GgmlType wType, long cols, int seed)
    {
        byte[] wq = TestData.Quantize(wType, TestData.Gaussian(seed, Rows * cols));
        var buffer = new GuardedBuffer(wq.Length);
        wq.CopyTo(buffer.Span);
        return buffer;
    }

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void Each_token_row_equals_the_one_token_matmul_bit_for_bit(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        using var pool1 = new CpuWorkerPool(1);
        using var pool2 = new CpuWorkerPool(2);
        using var scratch = new MatMulScratch();
        foreach (long cols in Cols(wType))
        {
            using var wBuf = Weights(wType, cols, seed: 1000 + (int)cols);
            long maxN = TokenCounts.Max();
            float[] x = TestData.Gaussian(seed: 2000 + (int)cols, maxN * cols, scale: 1.5f);
            // Each token alone (n = 1), one thread.
            var alone = new float[maxN * Rows];
            fixed (float* px = x, pa = alone)
                for (long t = 0; t < maxN; t++)
                    MatMul.Run(wType, wBuf.Pointer, Rows, cols, px + t * cols, 1, pa + t * Rows, pool1, scratch, isa);
            foreach (long n in TokenCounts)
            foreach (long first in new long[] { 0, maxN - n }) // the same tokens at other positions in other batches
            foreach (var pool in new[] { pool1, pool2 })
            {
                var y = new float[n * Rows];
                fixed (float* px = x, py = y)
                    MatMul.Run(wType, wBuf.Pointer, Rows, cols, px + first * cols, n, py, pool, scratch, isa);
                for (long t = 0; t < n; t++)
                for (long r = 0; r < Rows; r++)
                {
                    float expected = alone[(first + t) * Rows + r], actual = y[t * Rows + r];
                    if (BitConverter.SingleToInt32Bits(expected) != BitConverter.SingleToInt32Bits(actual))
                        Assert.Fail($"{wType}/{isa} cols {cols} n {n} threads {pool.ThreadCount}: token {first + t} (row {t} of the batch), output {r}: " +
                                    $"{actual:R} batched, {expected:R} alone");
                }
            }
        }
    }

    /// <summary>
    /// The quantized types' canonical arithmetic (exact integer block sums, one FMA per block in block order) does not depend on
    /// the instruction set: the AVX2 and AVX-512 levels give the scalar level's bits. The float types' AVX-512 level has its own
    /// accumulator layout (two 16-lane accumulators), equal to itself at every n (the test above).
    /// </summary>
    [Theory]
    [MemberData(nameof(QuantizedTypes))]
    public void Quantized_types_give_the_same_bits_at_every_isa_level(GgmlType wType)
    {
        using var pool = new CpuWorkerPool(2);
        using var scratch = new MatMulScratch();
        foreach (long cols in Cols(wType))
        {
            using var wBuf = Weights(wType, cols, seed: 3000 + (int)cols);
            foreach (long n in new long[] { 1, 4, 13 })
            {
                float[] x = TestData.Gaussian(seed: 4000 + (int)(cols + n), n * cols, scale: 1.5f);
                float[]? reference = null;
                foreach (var isa in TestData.Isas)
                {
                    if (!KernelIsaSupport.IsSupported(isa)) continue;
                    var y = new float[n * Rows];
                    fixed (float* px = x, py = y)
                        MatMul.Run(wType, wBuf.Pointer, Rows, cols, px, n, py, pool, scratch, isa);
                    if (reference is null) { reference = y; continue; }
                    for (long i = 0; i < y.Length; i++)
                        Assert.True(BitConverter.SingleToInt32Bits(reference[i]) == BitConverter.SingleToInt32Bits(y[i]),
                            $"{wType} cols {cols} n {n}: y[{i / Rows},{i % Rows}] is {y[i]:R} at {isa}, {reference[i]:R} at {KernelIsa.Scalar}");
                }
            }
        }
    }

    public static TheoryData<GgmlType> QuantizedTypes()
    {
        var data = new TheoryData<GgmlType>();
        foreach (var t in TestData.WeightTypes)
            if (GgmlTypes.Get(t).IsQuantized) data.Add(t);
        return data;
    }
}

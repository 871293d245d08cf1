using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The repacked prompt matmul (<see cref="RepackedGemm"/>): rows × tokens against the per-row kernels. Both perform the
/// canonical arithmetic (exact integer block sums, one FMA per block in block order; docs/batching.md#batch-invariance-on-the-cpu),
/// so every output must equal the per-row kernel's bit for bit, at every level that has the repacked path.
/// </summary>
public unsafe class RepackedGemmTests
{
    public static TheoryData<GgmlType, KernelIsa> RepackedTypes()
    {
        var data = new TheoryData<GgmlType, KernelIsa>();
        foreach (var t in TestData.WeightTypes)
            foreach (var isa in TestData.Isas)
                if (RepackedGemm.Supports(t, isa)) data.Add(t, isa);
        return data;
    }

    [Theory]
    [MemberData(nameof(RepackedTypes))]
    public void Repacked_MatMul_equals_the_per_row_kernels_bit_for_bit(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        var actType = QuantDot.ActivationType(wType);
        using var pool1 = new CpuWorkerPool(1);
        using var pool2 = new CpuWorkerPool(2);
        using var scratch = new MatMulScratch();
        foreach (long cols in TestData.ColsFor(wType))
        foreach (long rows in new long[] { 8, 37, 64 }) // 37: four groups of 8 and five rows left over
        foreach (long n in new long[] { RepackedGemm.MinTokens, 9, 10, 13, 33 }) // token counts with 0..3 left over after groups of 4
        {
            byte[] wq = TestData.Quantize(wType, TestData.Gaussian(seed: (int)(rows * 7 + cols + n), rows * cols));
            float[] x = TestData.Gaussian(seed: (int)(n * 13 + cols), n * cols, scale: 0.75f);
            long wRowBytes = GgmlTypes.RowSize(wType, cols), actRowBytes = GgmlTypes.RowSize(actType, cols);
            // The weights end at an unreadable page: a group or leftover row read past the matrix faults.
            using var wBuf = new GuardedBuffer(wq.Length);
            wq.CopyTo(wBuf.Span);
            var act = new byte[actRowBytes * n];
            fixed (float* px = x)
            fixed (byte* pa = act)
                for (long t = 0; t < n; t++) ActivationQuantizer.Quantize(actType, px + t * cols, pa + t * actRowBytes, cols, isa);
            foreach (var pool in new[] { pool1, pool2 })
            {
                var y = new float[n * rows];
                Array.Fill(y, float.NaN);
                fixed (float* px = x, py = y)
                    MatMul.Run(wType, wBuf.Pointer, rows, cols, px, n, py, pool, scratch, isa);
                fixed (byte* pa = act)
                {
                    for (long r = 0; r < rows; r++)
                    for (long t = 0; t < n; t++)
                    {
                        float expected = QuantDot.Dot(wType, wBuf.Pointer + r * wRowBytes, pa + t * actRowBytes, cols, isa);
                        float actual = y[t * rows + r];
                        Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual),
                            $"{wType}/{isa} rows {rows} cols {cols} n {n} threads {pool.ThreadCount}: y[{t},{r}] = {actual:R} repacked, {expected:R} per-row kernel");
                    }
                }
            }
        }
    }

    public static TheoryData<KernelIsa> KeptRepackedIsas()
    {
        var data = new TheoryData<KernelIsa>();
        foreach (var isa in TestData.Isas)
            if (RepackedGemm.Supports(GgmlType.Q4_0, isa)) data.Add(isa);
        return data;
    }

    /// <summary>
    /// Q4_0 weights kept repacked (<see cref="RepackedWeights"/>, what the CPU queue uses for every Q4_0 matmul): every token count
    /// from 1 on, long rows that go in slices (4096 + 96 columns: slices of 64, 64 and 3 blocks), rows left over after the groups.
    /// Every output equals the per-row kernel's bit for bit, so a sequence's logits do not depend on the path.
    /// </summary>
    [Theory]
    [MemberData(nameof(KeptRepackedIsas))]
    public void Kept_repacked_Q4_0_MatMul_equals_the_per_row_kernels_bit_for_bit(KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        const GgmlType wType = GgmlType.Q4_0;
        using var pool1 = new CpuWorkerPool(1);
        using var pool2 = new CpuWorkerPool(2);
        using var scratch = new MatMulScratch();
        foreach (long cols in TestData.ColsFor(wType))
        foreach (long rows in new long[] { 8, 37, 64 })
        {
            byte[] wq = TestData.Quantize(wType, TestData.Gaussian(seed: (int)(rows * 11 + cols), rows * cols));
            long wRowBytes = GgmlTypes.RowSize(wType, cols), actRowBytes = GgmlTypes.RowSize(GgmlType.Q8_0, cols);
            // The weights end at an unreadable page: a leftover row read past the matrix faults.
            using var wBuf = new GuardedBuffer(wq.Length);
            wq.CopyTo(wBuf.Span);
            using var packed = RepackedWeights.Create(wType, wBuf.Pointer, rows, cols, pool2);
            Assert.Equal(wq, wBuf.Span.ToArray()); // the source is only read
            foreach (long n in new long[] { 1, 2, 3, 4, 5, 7, 8, 9, 33 })
            {
                float[] x = TestData.Gaussian(seed: (int)(n * 17 + cols), n * cols, scale: 0.75f);
                var act = new byte[actRowBytes * n];
                fixed (float* px = x)
                fixed (byte* pa = act)
                    for (long t = 0; t < n; t++) ActivationQuantizer.Quantize(GgmlType.Q8_0, px + t * cols, pa + t * actRowBytes, cols, isa);
                foreach (var pool in new[] { pool1, pool2 })
                {
                    var y = new float[n * rows];
                    Array.Fill(y, float.NaN);
                    fixed (float* px = x, py = y)
                        MatMul.Run(wType, wBuf.Pointer, rows, cols, px, n, py, pool, scratch, isa, packed);
                    fixed (byte* pa = act)
                    {
                        for (long r = 0; r < rows; r++)
                        for (long t = 0; t < n; t++)
                        {
                            float expected = QuantDot.Dot(wType, wBuf.Pointer + r * wRowBytes, pa + t * actRowBytes, cols, isa);
                            float actual = y[t * rows + r];
                            Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual),
                                $"{isa} rows {rows} cols {cols} n {n} threads {pool.ThreadCount}: y[{t},{r}] = {actual:R} kept repacked, {expected:R} per-row kernel");
                        }
                    }
                }
            }
        }
    }

    [Fact]
    public void Kept_repacked_weights_are_made_for_Q4_0_with_a_whole_group_only()
    {
        Assert.Equal(RepackedGemm.Supports(GgmlType.Q4_0, KernelIsaSupport.Best), RepackedWeights.Supports(GgmlType.Q4_0, 8, 64));
        Assert.False(RepackedWeights.Supports(GgmlType.Q4_0, 7, 64));
        Assert.False(RepackedWeights.Supports(GgmlType.Q8_0, 64, 64));
        Assert.False(RepackedWeights.Supports(GgmlType.Q4_K, 64, 256));
        Assert.False(RepackedWeights.Supports(GgmlType.Q4_0, 64, 64, KernelIsa.Scalar));
    }
}

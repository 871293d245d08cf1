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
}

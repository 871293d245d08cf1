using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The repacked prompt matmul (<see cref="RepackedGemm"/>): rows × tokens against a double-precision evaluation of the
/// same quantized weights and activations. Its integer block sums are exact, so the only difference from any other
/// kernel is float rounding in the per-block scaling and accumulation, bounded by <see cref="RoundingBound"/>.
/// </summary>
public unsafe class RepackedGemmTests
{
    /// <summary>
    /// 1e-5 × Σ|w·x| over the row (dequantized weights and activations, in double) plus 1e-6: float accumulation over at most a
    /// few hundred block terms, each carrying a rounding of about 2⁻²⁴ relative to its magnitude, stays well inside this.
    /// </summary>
    internal static double RoundingBound(GgmlType wType, byte* wRow, GgmlType actType, byte* aRow, long cols)
    {
        var w = new float[cols];
        var a = new float[cols];
        fixed (float* pw = w, pa = a)
        {
            RowDequantizer.DequantizeRow(wType, wRow, pw, cols, KernelIsa.Scalar);
            RowDequantizer.DequantizeRow(actType, aRow, pa, cols, KernelIsa.Scalar);
        }
        double abs = 0;
        for (long i = 0; i < cols; i++) abs += Math.Abs((double)w[i] * a[i]);
        return 1e-5 * abs + 1e-6;
    }

    public static TheoryData<GgmlType> RepackedTypes()
    {
        var data = new TheoryData<GgmlType>();
        foreach (var t in TestData.WeightTypes)
            if (RepackedGemm.Supports(t, KernelIsa.Avx2)) data.Add(t);
        return data;
    }

    [Theory]
    [MemberData(nameof(RepackedTypes))]
    public void Repacked_MatMul_matches_a_double_reference(GgmlType wType)
    {
        TestData.SkipUnlessSupported(KernelIsa.Avx2);
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
                for (long t = 0; t < n; t++) ActivationQuantizer.Quantize(actType, px + t * cols, pa + t * actRowBytes, cols, KernelIsa.Avx2);
            var wDeq = new float[cols];
            var aDeq = new float[cols];
            foreach (var pool in new[] { pool1, pool2 })
            {
                var y = new float[n * rows];
                Array.Fill(y, float.NaN);
                fixed (float* px = x, py = y)
                    MatMul.Run(wType, wBuf.Pointer, rows, cols, px, n, py, pool, scratch, KernelIsa.Avx2);
                fixed (byte* pa = act)
                fixed (float* pwd = wDeq, pad = aDeq)
                {
                    for (long r = 0; r < rows; r++)
                    {
                        byte* wRow = wBuf.Pointer + r * wRowBytes;
                        RowDequantizer.DequantizeRow(wType, wRow, pwd, cols, KernelIsa.Scalar);
                        for (long t = 0; t < n; t++)
                        {
                            byte* aRow = pa + t * actRowBytes;
                            RowDequantizer.DequantizeRow(actType, aRow, pad, cols, KernelIsa.Scalar);
                            double expected = 0;
                            for (long i = 0; i < cols; i++) expected += (double)wDeq[i] * aDeq[i];
                            float actual = y[t * rows + r];
                            double bound = RoundingBound(wType, wRow, actType, aRow, cols);
                            Assert.True(Math.Abs(actual - expected) <= bound,
                                $"{wType} rows {rows} cols {cols} n {n} threads {pool.ThreadCount}: y[{t},{r}] = {actual}, expected {expected}, bound {bound}");
                        }
                    }
                }
            }
        }
    }
}

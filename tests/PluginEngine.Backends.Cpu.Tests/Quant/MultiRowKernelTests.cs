using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The multi-row (generation) kernels against the single-row kernels: per row they perform the canonical arithmetic of the
/// type at the level, as the single-row kernel does, so the results must be bit-identical. The single-row kernels are checked against the
/// scalar reference in <see cref="KernelTests"/>; <see cref="MultiTokenKernelTests.MatMul_over_many_tokens_equals_per_token_dots"/>
/// covers the n = 1 matmul that dispatches to these kernels (row counts that are not multiples of four included).
/// </summary>
public unsafe class MultiRowKernelTests
{
    public static TheoryData<GgmlType, KernelIsa> TypesByIsa() => MultiTokenKernelTests.TypesByIsa();

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void The_multi_row_dot_is_bit_identical_to_the_single_row_dot(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        var kernel = QuantDot.ResolveMultiRow(wType, isa);
        if (isa == KernelIsa.Scalar)
        {
            Assert.True(kernel == null, "the scalar level has no multi-row kernels; MatMul must use its single-row dots");
            return;
        }
        if (kernel == null)
        {
            // MatMul then runs the single-row kernel per row (BatchInvarianceTests covers that path): the float types, and Q8_0
            // at the AVX-512 level.
            Assert.True(GgmlTypes.Get(wType).BlockSize == 1 || (isa == KernelIsa.Avx512 && wType == GgmlType.Q8_0),
                $"{wType} has no multi-row kernel at {isa}");
            return;
        }
        const int rows = QuantDot.MultiRowWidth;
        var actType = QuantDot.ActivationType(wType);
        foreach (long cols in TestData.ColsFor(wType))
        {
            long wRowBytes = GgmlTypes.RowSize(wType, cols);
            byte[] wq = TestData.Quantize(wType, TestData.Gaussian(seed: 500 + (int)cols, rows * cols));
            float[] x = TestData.Gaussian(seed: 600 + (int)cols, cols, scale: 2f);
            byte[] act = new byte[GgmlTypes.RowSize(actType, cols)];
            fixed (float* px = x)
            fixed (byte* pa = act)
                ActivationQuantizer.Quantize(actType, px, pa, cols, isa);
            // Guarded buffers end at an unreadable page: reading past the last weight row or the activation row faults.
            using var wBuf = new GuardedBuffer(wq.Length);
            using var aBuf = new GuardedBuffer(act.Length);
            wq.CopyTo(wBuf.Span);
            act.CopyTo(aBuf.Span);
            var y = new float[rows + 1];
            Array.Fill(y, float.NaN);
            fixed (float* py = y) kernel(wBuf.Pointer, wRowBytes, aBuf.Pointer, cols, py);
            for (int r = 0; r < rows; r++)
            {
                float expected = QuantDot.Dot(wType, wBuf.Pointer + r * wRowBytes, aBuf.Pointer, cols, isa);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[r]),
                    $"{wType}/{isa} cols {cols} row {r}: multi-row {y[r]}, single-row {expected}");
            }
            Assert.True(float.IsNaN(y[rows]), $"{wType}/{isa} cols {cols}: wrote past the {rows} outputs");
        }
    }

    /// <summary>
    /// Generation (n = 1) matmuls against a double-precision sum over the reference decode of the weights and of the quantized
    /// activation, for row counts around the four-row width and the row tile (1 to 13, 37) and rows of 1, 3 and 5 blocks, with
    /// one and two threads: rows in groups of four go through the multi-row kernel (where the level has one) and the rest
    /// through the single-row kernel. The bound is <see cref="KernelTests"/>' (k + 8)·u·M.
    /// </summary>
    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void Generation_MatMul_matches_the_reference_for_many_row_counts(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        var actType = QuantDot.ActivationType(wType);
        int wBlock = Math.Max(1, GgmlTypes.Get(wType).BlockSize);
        int block = Math.Max(wBlock, actType == GgmlType.F32 ? 1 : GgmlTypes.Get(actType).BlockSize);
        bool quantized = GgmlTypes.Get(wType).IsQuantized;
        using var pool1 = new CpuWorkerPool(1);
        using var pool2 = new CpuWorkerPool(2);
        using var scratch = new MatMulScratch();
        foreach (long blocks in new long[] { 1, 3, 5 })
        foreach (long rows in new long[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 37 })
        {
            long cols = blocks * block;
            byte[] wq = TestData.Quantize(wType, TestData.Gaussian(seed: (int)(900 + rows * 31 + cols), rows * cols));
            float[] w = TestData.Dequantize(wType, wq, rows * cols);
            float[] x = TestData.Gaussian(seed: (int)(700 + cols), cols, scale: 2f);
            float[] xHat = actType == GgmlType.F32 ? x : TestData.Dequantize(actType, TestData.Quantize(actType, x), cols);
            long wRowBytes = GgmlTypes.RowSize(wType, cols);
            using var wBuf = new GuardedBuffer(wq.Length);
            wq.CopyTo(wBuf.Span);
            foreach (var pool in new[] { pool1, pool2 })
            {
                var y = new float[rows];
                fixed (float* px = x)
                fixed (float* py = y)
                    MatMul.Run(wType, wBuf.Pointer, rows, cols, px, 1, py, pool, scratch, isa);
                for (long r = 0; r < rows; r++)
                {
                    double expected = 0, magnitude = 0;
                    for (long b = 0; b < cols / wBlock; b++)
                    {
                        long i0 = r * cols + b * wBlock;
                        float wmax = 0;
                        for (long i = i0; i < i0 + wBlock; i++) wmax = MathF.Max(wmax, MathF.Abs(w[i]));
                        for (long i = i0; i < i0 + wBlock; i++)
                        {
                            float xi = xHat[i - r * cols];
                            expected += (double)w[i] * xi;
                            magnitude += Math.Abs((double)xi) * (Math.Abs(w[i]) + (quantized ? 2 * wmax : 0));
                        }
                    }
                    double tolerance = ((quantized ? cols / wBlock : cols) + 8) * Math.Pow(2, -24) * magnitude;
                    Assert.True(Math.Abs(y[r] - expected) <= tolerance,
                        $"{wType}/{isa} rows {rows} cols {cols} threads {pool.ThreadCount} row {r}: {y[r]}, reference {expected}, |diff| {Math.Abs(y[r] - expected)} > {tolerance}");
                }
            }
        }
    }
}

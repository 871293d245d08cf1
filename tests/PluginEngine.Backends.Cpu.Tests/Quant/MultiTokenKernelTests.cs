using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The multi-token (prompt) kernels against the single-token kernels. Per token they perform the single-token AVX2
/// kernel's operations in the same order, so the results must be bit-identical, not merely close; the single-token
/// kernels are themselves checked against the scalar reference in <see cref="KernelTests"/>.
/// </summary>
public unsafe class MultiTokenKernelTests
{
    public static TheoryData<GgmlType, KernelIsa> TypesByIsa()
    {
        var data = new TheoryData<GgmlType, KernelIsa>();
        foreach (var t in TestData.WeightTypes)
            foreach (var isa in TestData.Isas) data.Add(t, isa);
        return data;
    }

    /// <summary>Quantizes (or copies, for float weights) <paramref name="n"/> activation rows into the kernel's input format.</summary>
    private static byte[] KernelActivations(GgmlType wType, float[] x, long n, long cols, KernelIsa isa)
    {
        var actType = QuantDot.ActivationType(wType);
        long rowBytes = GgmlTypes.RowSize(actType, cols);
        var bytes = new byte[rowBytes * n];
        fixed (float* px = x)
        fixed (byte* pb = bytes)
        {
            for (long t = 0; t < n; t++)
            {
                if (actType == GgmlType.F32) Buffer.MemoryCopy(px + t * cols, pb + t * rowBytes, rowBytes, rowBytes);
                else ActivationQuantizer.Quantize(actType, px + t * cols, pb + t * rowBytes, cols, isa);
            }
        }
        return bytes;
    }

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void The_multi_token_dot_is_bit_identical_to_the_single_token_Avx2_dot(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        var kernel = QuantDot.ResolveMultiToken(wType, isa, out int width);
        if (isa == KernelIsa.Scalar)
        {
            Assert.True(kernel == null && width == 0, "the scalar level has no multi-token kernel; MatMul must fall back to per-token dots");
            return;
        }
        Assert.True(kernel != null);
        Assert.InRange(width, 2, 8);
        const long yStride = 3; // results land in a strided column, as in a matmul's output
        var actType = QuantDot.ActivationType(wType);
        foreach (long cols in TestData.ColsFor(wType))
        {
            byte[] wq = TestData.Quantize(wType, TestData.Gaussian(seed: 300 + (int)cols, cols));
            byte[] act = KernelActivations(wType, TestData.Gaussian(seed: 400 + (int)cols, width * cols, scale: 2f), width, cols, isa);
            long actRowBytes = GgmlTypes.RowSize(actType, cols);
            // Guarded buffers end at an unreadable page: reading past the weight row or the last token's row faults.
            using var wBuf = new GuardedBuffer(wq.Length);
            using var aBuf = new GuardedBuffer(act.Length);
            wq.CopyTo(wBuf.Span);
            act.CopyTo(aBuf.Span);
            var y = new float[width * yStride];
            Array.Fill(y, float.NaN);
            fixed (float* py = y) kernel(wBuf.Pointer, aBuf.Pointer, actRowBytes, cols, py, yStride);
            for (int t = 0; t < width; t++)
            {
                float expected = QuantDot.Dot(wType, wBuf.Pointer, aBuf.Pointer + t * actRowBytes, cols, KernelIsa.Avx2);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[t * yStride]),
                    $"{wType}/{isa} cols {cols} token {t}: multi-token {y[t * yStride]}, single-token {expected}");
                for (long k = 1; k < yStride; k++)
                    Assert.True(float.IsNaN(y[t * yStride + k]), $"{wType}/{isa} cols {cols}: wrote y[{t * yStride + k}] outside the strided outputs");
            }
        }
    }

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void MatMul_over_many_tokens_equals_per_token_dots(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        var actType = QuantDot.ActivationType(wType);
        using var pool1 = new CpuWorkerPool(1);
        using var pool2 = new CpuWorkerPool(2);
        using var scratch = new MatMulScratch();
        long[] colsList = TestData.ColsFor(wType);
        foreach (long cols in new[] { colsList[0], colsList[^1] })
        foreach (long rows in new long[] { 1, 37 }) // 37: not a multiple of any row tile
        {
            byte[] wq = TestData.Quantize(wType, TestData.Gaussian(seed: (int)(rows * 5 + cols), rows * cols));
            long wRowBytes = GgmlTypes.RowSize(wType, cols), actRowBytes = GgmlTypes.RowSize(actType, cols);
            using var wBuf = new GuardedBuffer(wq.Length);
            wq.CopyTo(wBuf.Span);
            foreach (long n in new long[] { 1, 3, 5, 7, 9, 33 })
            {
                float[] x = TestData.Gaussian(seed: (int)(n * 11 + cols), n * cols, scale: 0.5f);
                byte[] act = KernelActivations(wType, x, n, cols, isa);
                foreach (var pool in new[] { pool1, pool2 })
                {
                    var y = new float[n * rows];
                    fixed (float* px = x)
                    fixed (float* py = y)
                        MatMul.Run(wType, wBuf.Pointer, rows, cols, px, n, py, pool, scratch, isa);
                    fixed (byte* pa = act)
                    {
                        for (long t = 0; t < n; t++)
                        for (long r = 0; r < rows; r++)
                        {
                            byte* wRow = wBuf.Pointer + r * wRowBytes;
                            byte* aRow = pa + t * actRowBytes;
                            float actual = y[t * rows + r];
                            // Token groups run the multi-token kernels, which equal the AVX2 single-token kernel even at the
                            // AVX-512 level; leftover tokens run the level's own single-token kernel.
                            float own = QuantDot.Dot(wType, wRow, aRow, cols, isa);
                            float avx2 = isa == KernelIsa.Scalar ? own : QuantDot.Dot(wType, wRow, aRow, cols, KernelIsa.Avx2);
                            if (n >= RepackedGemm.MinTokens && RepackedGemm.Supports(wType, isa))
                            {
                                // The repacked kernels sum the same exact integer block sums in another float order.
                                double bound = RepackedGemmTests.RoundingBound(wType, wRow, actType, aRow, cols);
                                Assert.True(Math.Abs(actual - own) <= bound,
                                    $"{wType}/{isa} rows {rows} cols {cols} n {n} threads {pool.ThreadCount}: y[{t},{r}] = {actual}, per-token dot {own}, bound {bound}");
                                continue;
                            }
                            Assert.True(actual.Equals(own) || actual.Equals(avx2),
                                $"{wType}/{isa} rows {rows} cols {cols} n {n} threads {pool.ThreadCount}: y[{t},{r}] = {actual}, per-token dot {own} (AVX2 {avx2})");
                        }
                    }
                }
            }
        }
    }
}

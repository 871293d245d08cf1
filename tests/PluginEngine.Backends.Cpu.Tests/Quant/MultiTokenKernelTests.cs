using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The multi-token kernels against the single-token kernels. Per token they perform the canonical arithmetic of the type at
/// the level (docs/batching.md#batch-invariance-on-the-cpu), as the single-token kernel does, so the results must be
/// bit-identical, not merely close; the single-token kernels are themselves checked against the scalar reference in
/// <see cref="KernelTests"/>.
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

    /// <summary>The activation scales of <paramref name="n"/> Q8_0 rows as the multi-token kernels read them: block b of token t at b·n + t.</summary>
    private static float[] TokenScales(byte[] act, long n, long cols)
    {
        long blocks = cols / 32, rowBytes = GgmlTypes.RowSize(GgmlType.Q8_0, cols);
        var scales = new float[Math.Max(1, n * blocks)];
        for (long t = 0; t < n; t++)
            for (long b = 0; b < blocks; b++)
                scales[b * n + t] = (float)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(act, (int)(t * rowBytes + b * 34)));
        return scales;
    }

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void The_multi_token_dot_is_bit_identical_to_the_single_token_dot(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        if (isa == KernelIsa.Scalar)
        {
            Assert.True(QuantDot.ResolveMultiToken(wType, isa, 8) == null && QuantDot.ResolveMultiToken(wType, isa, 4) == null,
                "the scalar level has no multi-token kernel; MatMul must fall back to per-token dots");
            return;
        }
        Assert.True(QuantDot.ResolveMultiToken(wType, isa, 4) != null, $"{wType}/{isa} has no four-token kernel");
        foreach (int width in new[] { 8, 4 })
        {
            var kernel = QuantDot.ResolveMultiToken(wType, isa, width);
            if (kernel == null) continue;
            CheckMultiToken(wType, isa, width, kernel);
        }
    }

    private static void CheckMultiToken(GgmlType wType, KernelIsa isa, int width, delegate*<byte*, byte*, long, float*, long, long, float*, long, void> kernel)
    {
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
            float[] scales = QuantDot.MultiTokenScales(wType) ? TokenScales(act, width, cols) : [0f];
            fixed (float* py = y, ps = scales) kernel(wBuf.Pointer, aBuf.Pointer, actRowBytes, ps, width, cols, py, yStride);
            for (int t = 0; t < width; t++)
            {
                float expected = QuantDot.Dot(wType, wBuf.Pointer, aBuf.Pointer + t * actRowBytes, cols, isa);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[t * yStride]),
                    $"{wType}/{isa} cols {cols} width {width} token {t}: multi-token {y[t * yStride]}, single-token {expected}");
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
                            // Every path (multi-row, multi-token, repacked) performs the level's canonical arithmetic.
                            float own = QuantDot.Dot(wType, wRow, aRow, cols, isa);
                            Assert.True(BitConverter.SingleToInt32Bits(actual) == BitConverter.SingleToInt32Bits(own),
                                $"{wType}/{isa} rows {rows} cols {cols} n {n} threads {pool.ThreadCount}: y[{t},{r}] = {actual}, per-token dot {own}");
                        }
                    }
                }
            }
        }
    }
}

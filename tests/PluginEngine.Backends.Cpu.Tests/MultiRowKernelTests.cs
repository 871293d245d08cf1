using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The multi-row (generation) kernels against the single-row kernels: per row they perform the single-row AVX2 kernel's
/// operations in the same order, so the results must be bit-identical. The single-row kernels are checked against the
/// scalar reference in <see cref="KernelTests"/>; <see cref="MultiTokenKernelTests.MatMulOverManyTokensEqualsPerTokenDots"/>
/// covers the n = 1 matmul that dispatches to these kernels (row counts that are not multiples of four included).
/// </summary>
public unsafe class MultiRowKernelTests
{
    public static TheoryData<GgmlType, KernelIsa> TypesByIsa() => MultiTokenKernelTests.TypesByIsa();

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void MultiRowDotIsBitIdenticalToSingleRowAvx2Dot(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        var kernel = QuantDot.ResolveMultiRow(wType, isa);
        if (isa != KernelIsa.Avx2)
        {
            Assert.True(kernel == null, $"only the AVX2 level has multi-row kernels; at {isa} MatMul must use the level's single-row dots");
            return;
        }
        if (kernel == null) Assert.Skip($"{wType} has no multi-row kernel (MatMul uses the single-row kernel per row)");
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
                float expected = QuantDot.Dot(wType, wBuf.Pointer + r * wRowBytes, aBuf.Pointer, cols, KernelIsa.Avx2);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[r]),
                    $"{wType}/{isa} cols {cols} row {r}: multi-row {y[r]}, single-row {expected}");
            }
            Assert.True(float.IsNaN(y[rows]), $"{wType}/{isa} cols {cols}: wrote past the {rows} outputs");
        }
    }
}

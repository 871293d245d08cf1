using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;
using PluginEngine.Core.Quantization;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The fast CPU kernels (every instruction-set level) against PluginEngine.Core's scalar reference.
///
/// Tolerance for dot products and matmuls (why): integer block sums are exact in every path, so fast and
/// reference differ only by float rounding — the per-block scale products and int→float conversions
/// (≤ 4 roundings per block), the accumulation over k block terms in some order (≤ k roundings of partial
/// sums), and the reference's own float decode of each weight (≤ 3 roundings). With unit roundoff u = 2^-24 the
/// difference is at most (k + 8)·u·M, where M bounds the magnitudes of everything summed:
/// M = Σ|x̂_i|·(|ŵ_i| + 2·max|ŵ| over the weight's block) (the second term covers K-quant min offsets, which are
/// subtracted separately). For float weights k = the element count. Matmul tests compare with unquantized float
/// activations, so they add the activation quantization error Σ|ŵ_i|·|x_i − x̂_i|, computed from the reference's own x̂.
/// </summary>
public unsafe class KernelTests
{
    public static TheoryData<GgmlType, KernelIsa> TypesByIsa()
    {
        var data = new TheoryData<GgmlType, KernelIsa>();
        foreach (var t in TestData.WeightTypes)
            foreach (var isa in TestData.Isas) data.Add(t, isa);
        return data;
    }

    public static TheoryData<KernelIsa> AllIsas() => new(TestData.Isas);

    private static double UnitRoundoff => Math.Pow(2, -24);

    /// <summary>M from the class comment: Σ|x̂_i|·(|ŵ_i| + 2·max|ŵ| of the block holding i).</summary>
    private static double Magnitude(GgmlType wType, float[] w, float[] x)
    {
        int block = Math.Max(1, GgmlTypes.Get(wType).BlockSize);
        double m = 0;
        for (int b = 0; b < w.Length / block; b++)
        {
            float wmax = 0;
            for (int i = b * block; i < (b + 1) * block; i++) wmax = MathF.Max(wmax, MathF.Abs(w[i]));
            double offset = GgmlTypes.Get(wType).IsQuantized ? 2 * wmax : 0;
            for (int i = b * block; i < (b + 1) * block; i++) m += Math.Abs((double)x[i]) * (Math.Abs(w[i]) + offset);
        }
        return m;
    }

    private static long Terms(GgmlType wType, long cols) => GgmlTypes.Get(wType).IsQuantized ? cols / GgmlTypes.Get(wType).BlockSize : cols;

    /// <summary>The activation row as the kernel sees it: floats, or quantized by core's reference and decoded back.</summary>
    private static (byte[] Bytes, float[] Decoded) ReferenceActivation(GgmlType wType, float[] x)
    {
        var actType = QuantDot.ActivationType(wType);
        if (actType == GgmlType.F32)
        {
            var raw = new byte[x.Length * 4];
            Buffer.BlockCopy(x, 0, raw, 0, raw.Length);
            return (raw, x);
        }
        var q = TestData.Quantize(actType, x);
        return (q, TestData.Dequantize(actType, q, x.Length));
    }

    [Theory]
    [MemberData(nameof(AllIsas))]
    public void The_activation_quantizer_matches_the_reference_quantizer_byte_for_byte(KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        foreach (var type in new[] { GgmlType.Q8_0, GgmlType.Q8_K })
        {
            float[] x = TestData.Gaussian(seed: 3, 4096 + 256, scale: 3f);
            x[5] = 0; // zero block edge cases below
            Array.Clear(x, 256, 256); // an all-zero block of either type
            byte[] expected = TestData.Quantize(type, x);
            var actual = new byte[expected.Length];
            fixed (float* px = x)
            fixed (byte* pd = actual)
                ActivationQuantizer.Quantize(type, px, pd, x.Length, isa);
            Assert.Equal(expected, actual);
        }
    }

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void Dot_matches_the_scalar_reference(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        foreach (long cols in TestData.ColsFor(wType))
        {
            float[] wf = TestData.Gaussian(seed: 100 + (int)cols, cols);
            byte[] wq = TestData.Quantize(wType, wf);
            float[] w = TestData.Dequantize(wType, wq, cols);
            var (act, xHat) = ReferenceActivation(wType, TestData.Gaussian(seed: 200 + (int)cols, cols, scale: 2f));

            double expected = 0;
            for (long i = 0; i < cols; i++) expected += (double)w[i] * xHat[i];
            double tolerance = (Terms(wType, cols) + 8) * UnitRoundoff * Magnitude(wType, w, xHat);

            using var wBuf = new GuardedBuffer(wq.Length);
            using var aBuf = new GuardedBuffer(act.Length);
            wq.CopyTo(wBuf.Span);
            act.CopyTo(aBuf.Span);
            float actual = QuantDot.Dot(wType, wBuf.Pointer, aBuf.Pointer, cols, isa);
            Assert.True(Math.Abs(actual - expected) <= tolerance,
                $"{wType}/{isa} cols {cols}: fast {actual}, reference {expected}, |diff| {Math.Abs(actual - expected)} > {tolerance}");
        }
    }

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void MatMul_matches_a_naive_double_reference(GgmlType wType, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        var actType = QuantDot.ActivationType(wType);
        using var pool1 = new CpuWorkerPool(1);
        using var pool2 = new CpuWorkerPool(2);
        using var scratch = new MatMulScratch();
        foreach (long cols in TestData.ColsFor(wType))
        foreach (long rows in new long[] { 1, 3, 67 })
        {
            float[] wf = TestData.Gaussian(seed: (int)(rows * 7 + cols), rows * cols);
            byte[] wq = TestData.Quantize(wType, wf);
            float[] w = TestData.Dequantize(wType, wq, rows * cols);
            using var wBuf = new GuardedBuffer(wq.Length);
            wq.CopyTo(wBuf.Span);
            foreach (long n in new long[] { 1, 7 })
            {
                float[] x = TestData.Gaussian(seed: (int)(n * 13 + cols), n * cols, scale: 0.5f);
                float[] xHat = actType == GgmlType.F32 ? x : TestData.Dequantize(actType, TestData.Quantize(actType, x), x.Length);
                foreach (var pool in new[] { pool1, pool2 })
                {
                    var y = new float[n * rows];
                    fixed (float* px = x)
                    fixed (float* py = y)
                        MatMul.Run(wType, wBuf.Pointer, rows, cols, px, n, py, pool, scratch, isa);
                    for (long t = 0; t < n; t++)
                    for (long r = 0; r < rows; r++)
                    {
                        var wRow = w.AsSpan((int)(r * cols), (int)cols).ToArray();
                        var xRow = x.AsSpan((int)(t * cols), (int)cols).ToArray();
                        var xHatRow = xHat.AsSpan((int)(t * cols), (int)cols).ToArray();
                        double expected = 0, activationError = 0;
                        for (long c = 0; c < cols; c++)
                        {
                            expected += (double)wRow[c] * xRow[c];
                            activationError += Math.Abs((double)wRow[c]) * Math.Abs((double)xRow[c] - xHatRow[c]);
                        }
                        double tolerance = activationError + (Terms(wType, cols) + 8) * UnitRoundoff * Magnitude(wType, wRow, xHatRow);
                        float actual = y[t * rows + r];
                        Assert.True(Math.Abs(actual - expected) <= tolerance,
                            $"{wType}/{isa} rows {rows} cols {cols} n {n} threads {pool.ThreadCount}: y[{t},{r}] = {actual}, reference {expected}, |diff| {Math.Abs(actual - expected)} > {tolerance}");
                    }
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(TypesByIsa))]
    public void Dequantizing_a_row_is_bit_identical_to_the_reference(GgmlType type, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        foreach (long n in TestData.ColsFor(type))
        {
            byte[] q = TestData.Quantize(type, TestData.Gaussian(seed: 17, n));
            float[] expected = TestData.Dequantize(type, q, n);
            var actual = new float[n];
            using var src = new GuardedBuffer(q.Length);
            q.CopyTo(src.Span);
            fixed (float* pd = actual) RowDequantizer.DequantizeRow(type, src.Pointer, pd, n, isa);
            Assert.Equal(expected, actual);
        }
    }

    [Fact]
    public void MatMul_and_Dot_reject_rows_that_are_not_whole_blocks()
    {
        using var pool = new CpuWorkerPool(1);
        using var scratch = new MatMulScratch();
        var w = new byte[18 * 2];
        var x = new float[48];
        var y = new float[1];
        fixed (byte* pw = w)
        fixed (float* px = x, py = y)
        {
            byte* cw = pw;
            float* cx = px, cy = py;
            var ex = Assert.Throws<ArgumentException>(() => MatMul.Run(GgmlType.Q4_0, cw, 1, 48, cx, 1, cy, pool, scratch));
            Assert.Contains("48", ex.Message);
            Assert.Throws<NotSupportedException>(() => MatMul.Run(GgmlType.Q2_K, cw, 1, 256, cx, 1, cy, pool, scratch));
            ex = Assert.Throws<ArgumentException>(() => QuantDot.Dot(GgmlType.Q4_K, cw, cx, 255));
            Assert.Contains("255", ex.Message);
        }
    }

    [Fact]
    public void Forcing_an_unsupported_isa_throws_instead_of_faulting()
    {
        foreach (var isa in TestData.Isas)
        {
            if (KernelIsaSupport.IsSupported(isa)) continue;
            Assert.Throws<PlatformNotSupportedException>(() => QuantDot.Resolve(GgmlType.Q4_0, isa));
        }
        Assert.True(KernelIsaSupport.IsSupported(KernelIsaSupport.Best));
    }
}

/// <summary><see cref="HalfConversion.FromSingle"/> against .NET's own <c>(Half)</c> conversion.</summary>
public class HalfConversionTests
{
    [Fact]
    public void FromSingle_equals_the_runtime_conversion_everywhere()
    {
        // Every 251st float bit pattern (both signs, all exponents), plus the rounding boundaries around every f16 value.
        for (long bits = 0; bits <= uint.MaxValue; bits += 251) Check(BitConverter.UInt32BitsToSingle((uint)bits));
        for (int h = 0; h < 0x7C00; h++)
        {
            float v = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            uint b = BitConverter.SingleToUInt32Bits(v);
            for (int delta = -2; delta <= 2; delta++) Check(BitConverter.UInt32BitsToSingle((uint)(b + delta)));
            // Midpoint to the next f16 value (ties go to even) and its neighbours.
            float next = (float)BitConverter.UInt16BitsToHalf((ushort)(h + 1));
            uint mid = BitConverter.SingleToUInt32Bits((v + next) / 2);
            for (int delta = -1; delta <= 1; delta++) Check(BitConverter.UInt32BitsToSingle((uint)(mid + delta)));
        }
        foreach (float v in new[] { 65504f, 65519.99f, 65520f, 65536f, float.PositiveInfinity, float.NegativeInfinity, float.Epsilon, -0f, 6.1035156e-05f, 5.9604645e-08f, 2.9802322e-08f, 2.9802326e-08f })
            Check(v);
    }

    private static void Check(float v)
    {
        ushort expected = BitConverter.HalfToUInt16Bits((Half)v);
        ushort actual = HalfConversion.FromSingle(v);
        if (float.IsNaN(v))
            Assert.True(Half.IsNaN(BitConverter.UInt16BitsToHalf(actual)) && (actual & 0x8000) == (expected & 0x8000), $"NaN {BitConverter.SingleToUInt32Bits(v):X8} → {actual:X4}");
        else
            Assert.True(expected == actual, $"{v:R} ({BitConverter.SingleToUInt32Bits(v):X8}): expected {expected:X4}, got {actual:X4}");
    }
}

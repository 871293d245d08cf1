using PluginEngine.Backends.Cpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// Row ops against double-precision scalar references. Tolerances: add/multiply/scale round once, so they must
/// match the double result rounded to float exactly; RMSNorm 1e-5 relative (float sum of squares over up to 4k
/// elements); softmax and SiLU·mul 1e-5 relative + 1e-7 absolute (vectorized exp is accurate to a few ulp).
/// </summary>
public unsafe class RowOpsTests
{
    [Theory, MemberData(nameof(TestData.OddLengths), MemberType = typeof(TestData))]
    public void Add_matches_reference_exactly(int n)
    {
        var a = TestData.Uniform(n, 1, -100, 100);
        var b = TestData.Uniform(n, 2, -100, 100);
        var y = new float[n];
        fixed (float* pa = a, pb = b, py = y) RowOps.Add(pa, pb, py, n);
        for (int i = 0; i < n; i++) Assert.Equal((float)((double)a[i] + b[i]), y[i]);
    }

    [Theory, MemberData(nameof(TestData.OddLengths), MemberType = typeof(TestData))]
    public void Multiply_and_scale_match_reference_exactly(int n)
    {
        var a = TestData.Uniform(n, 3, -10, 10);
        var b = TestData.Uniform(n, 4, -10, 10);
        var product = new float[n];
        var scaled = new float[n];
        fixed (float* pa = a, pb = b, pp = product, ps = scaled)
        {
            RowOps.Multiply(pa, pb, pp, n);
            RowOps.Scale(pa, -0.37f, ps, n);
        }
        for (int i = 0; i < n; i++)
        {
            Assert.Equal((float)((double)a[i] * b[i]), product[i]);
            Assert.Equal((float)((double)a[i] * -0.37f), scaled[i]);
        }
    }

    [Theory, MemberData(nameof(TestData.OddLengths), MemberType = typeof(TestData))]
    public void Add_in_place_accumulates_into_first_operand(int n)
    {
        var a = TestData.Uniform(n, 5);
        var b = TestData.Uniform(n, 6);
        var original = (float[])a.Clone();
        fixed (float* pa = a, pb = b) RowOps.Add(pa, pb, pa, n);
        for (int i = 0; i < n; i++) Assert.Equal(original[i] + b[i], a[i]);
    }

    [Theory, MemberData(nameof(TestData.OddLengths), MemberType = typeof(TestData))]
    public void RmsNorm_matches_reference(int n)
    {
        var x = TestData.Uniform(n, 7, -3, 3);
        var w = TestData.Uniform(n, 8, 0.5f, 1.5f);
        var y = new float[n];
        const float eps = 1e-5f;
        fixed (float* px = x, pw = w, py = y) RowOps.RmsNorm(px, pw, py, n, eps);
        TestData.AllClose(RmsNormReference(x, w, 0, n, eps), y, 1e-5, 1e-7, "rmsnorm");
    }

    [Fact]
    public void RmsNorm_of_zero_row_is_zero_thanks_to_eps()
    {
        var x = new float[33];
        var w = TestData.Uniform(33, 9);
        var y = TestData.Uniform(33, 10);
        fixed (float* px = x, pw = w, py = y) RowOps.RmsNorm(px, pw, py, 33, 1e-6f);
        Assert.All(y, v => Assert.Equal(0f, v));
    }

    [Fact]
    public void RmsNormRows_normalizes_only_its_row_range_in_place()
    {
        const int n = 100, rows = 5;
        var x = TestData.Uniform(n * rows, 11, -2, 2);
        var original = (float[])x.Clone();
        var w = TestData.Uniform(n, 12, 0.5f, 1.5f);
        fixed (float* px = x, pw = w) RowOps.RmsNormRows(px, pw, px, n, 1, 4, 1e-5f);
        for (int row = 0; row < rows; row++)
        {
            var actual = x.AsSpan(row * n, n).ToArray();
            if (row is 0 or 4)
                Assert.Equal(original.AsSpan(row * n, n).ToArray(), actual);
            else
                TestData.AllClose(RmsNormReference(original, w, row * n, n, 1e-5f), actual, 1e-5, 1e-7, $"row {row}");
        }
    }

    [Theory, MemberData(nameof(TestData.OddLengths), MemberType = typeof(TestData))]
    public void Softmax_matches_reference(int n)
    {
        // Large logits: without the max subtraction exp would overflow to infinity.
        var x = TestData.Uniform(n, 13, 50, 110);
        var expected = SoftmaxReference(x);
        fixed (float* px = x) RowOps.Softmax(px, n);
        TestData.AllClose(expected, x, 1e-5, 1e-7, "softmax");
        Assert.Equal(1.0, x.Sum(v => (double)v), 1e-5);
    }

    [Theory, MemberData(nameof(TestData.OddLengths), MemberType = typeof(TestData))]
    public void SiluMul_matches_reference(int n)
    {
        var gate = TestData.Uniform(n, 14, -12, 12);
        var up = TestData.Uniform(n, 15, -2, 2);
        var y = new float[n];
        fixed (float* pg = gate, pu = up, py = y) RowOps.SiluMul(pg, pu, py, n);
        var expected = new double[n];
        for (int i = 0; i < n; i++) expected[i] = gate[i] / (1 + Math.Exp(-(double)gate[i])) * up[i];
        TestData.AllClose(expected, y, 1e-5, 1e-7, "silu*up");
    }

    [Fact]
    public void SiluMul_saturates_without_nan_for_extreme_gates()
    {
        float[] gate = [-1000f, -100f, -88f, 0f, 88f, 100f, 1000f, -1e30f, 1e30f];
        var up = Enumerable.Repeat(2f, gate.Length).ToArray();
        var y = new float[gate.Length];
        fixed (float* pg = gate, pu = up, py = y) RowOps.SiluMul(pg, pu, py, gate.Length);
        float[] expected = [0f, 0f, 0f, 0f, 176f, 200f, 2000f, 0f, 2e30f];
        for (int i = 0; i < gate.Length; i++) TestData.Close(expected[i], y[i], 1e-6, 1e-6, "silu extreme", i);
    }

    [Fact]
    public void Bad_lengths_are_rejected_with_the_parameter_named()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => { fixed (float* p = new float[1]) RowOps.Softmax(p, 0); });
        Assert.Equal("n", ex.ParamName);
    }

    internal static double[] RmsNormReference(float[] x, float[] w, int offset, int n, float eps)
    {
        double sumSquares = 0;
        for (int i = 0; i < n; i++) sumSquares += (double)x[offset + i] * x[offset + i];
        double inverse = 1 / Math.Sqrt(sumSquares / n + eps);
        var y = new double[n];
        for (int i = 0; i < n; i++) y[i] = x[offset + i] * inverse * w[i];
        return y;
    }

    internal static double[] SoftmaxReference(ReadOnlySpan<float> x)
    {
        double max = double.NegativeInfinity;
        foreach (var v in x) max = Math.Max(max, v);
        var y = new double[x.Length];
        double sum = 0;
        for (int i = 0; i < x.Length; i++) sum += y[i] = Math.Exp(x[i] - max);
        for (int i = 0; i < x.Length; i++) y[i] /= sum;
        return y;
    }
}

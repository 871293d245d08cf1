using PluginEngine.Backends.Cpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// RoPE against a double-precision reference written from the definition (θ_i = pos·scale·base^(-2i/dim)).
/// Tolerance 2e-6 absolute on unit-range values: the kernel rounds cos/sin to float once and does one
/// multiply-add per element.
/// </summary>
public unsafe class RopeTests
{
    public static TheoryData<RopeMode, int, int> Shapes => new()
    {
        { RopeMode.Normal, 64, 64 },
        { RopeMode.NeoX, 64, 64 },
        { RopeMode.Normal, 128, 128 },
        { RopeMode.NeoX, 128, 128 },
        { RopeMode.Normal, 80, 32 },   // partial: only the first 32 elements turn
        { RopeMode.NeoX, 80, 32 },
        { RopeMode.Normal, 100, 46 },  // ropeDim/2 = 23: no vector width divides it
        { RopeMode.NeoX, 100, 46 },
        { RopeMode.NeoX, 6, 2 },
    };

    [Theory, MemberData(nameof(Shapes))]
    public void Rotation_matches_reference(RopeMode mode, int headDim, int ropeDim)
    {
        const int nHeads = 3;
        int[] positions = [0, 1, 7, 500, 4095, 32767];
        const float freqBase = 10000f, freqScale = 0.5f;
        int nTokens = positions.Length;
        var x = TestData.Uniform(nTokens * nHeads * headDim, 31);
        var expected = Reference(x, positions, nHeads, headDim, ropeDim, freqBase, freqScale, mode);
        var table = new float[Rope.TableLength(nTokens, ropeDim)];
        fixed (float* px = x, pt = table)
        {
            Rope.PrecomputeCosSin(positions, ropeDim, freqBase, freqScale, mode, pt);
            Rope.Apply(px, nHeads, headDim, ropeDim, mode, pt, 0, nTokens);
        }
        TestData.AllClose(expected, x, 0, 2e-6, $"rope {mode}");
    }

    [Fact]
    public void Modes_pair_different_elements()
    {
        // One head of 4 at position 1 with base 1 (every θ = 1): Normal turns (x0,x1) and (x2,x3);
        // NeoX turns (x0,x2) and (x1,x3).
        float[] normal = [1, 0, 0, 0];
        float[] neox = [1, 0, 0, 0];
        var table = new float[Rope.TableLength(1, 4)];
        fixed (float* pn = normal, px = neox, pt = table)
        {
            Rope.PrecomputeCosSin([1], 4, 1f, 1f, RopeMode.Normal, pt);
            Rope.Apply(pn, 1, 4, 4, RopeMode.Normal, pt, 0, 1);
            Rope.PrecomputeCosSin([1], 4, 1f, 1f, RopeMode.NeoX, pt);
            Rope.Apply(px, 1, 4, 4, RopeMode.NeoX, pt, 0, 1);
        }
        Assert.Equal(MathF.Cos(1), normal[0], 1e-6f);
        Assert.Equal(MathF.Sin(1), normal[1], 1e-6f);
        Assert.Equal(0f, normal[2]);
        Assert.Equal(MathF.Cos(1), neox[0], 1e-6f);
        Assert.Equal(0f, neox[1]);
        Assert.Equal(MathF.Sin(1), neox[2], 1e-6f);
    }

    [Fact]
    public void Only_the_token_range_is_rotated()
    {
        const int nHeads = 2, headDim = 16;
        int[] positions = [3, 4, 5, 6];
        var x = TestData.Uniform(positions.Length * nHeads * headDim, 32);
        var original = (float[])x.Clone();
        var expected = Reference(x, positions, nHeads, headDim, headDim, 10000f, 1f, RopeMode.NeoX);
        var table = new float[Rope.TableLength(positions.Length, headDim)];
        fixed (float* px = x, pt = table)
        {
            Rope.PrecomputeCosSin(positions, headDim, 10000f, 1f, RopeMode.NeoX, pt);
            Rope.Apply(px, nHeads, headDim, headDim, RopeMode.NeoX, pt, 1, 3);
        }
        int tokenSize = nHeads * headDim;
        for (int i = 0; i < x.Length; i++)
        {
            int token = i / tokenSize;
            if (token is 1 or 2) TestData.Close(expected[i], x[i], 0, 2e-6, "rotated", i);
            else Assert.Equal(original[i], x[i]);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(7)]
    [InlineData(66)]
    public void Bad_rope_dim_is_rejected(int ropeDim)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            fixed (float* p = new float[256]) Rope.Apply(p, 1, 64, ropeDim, RopeMode.Normal, p, 0, 1);
        });
        Assert.Equal("ropeDim", ex.ParamName);
    }

    [Theory]
    [InlineData(RopeMode.Normal, 64, 64)]
    [InlineData(RopeMode.NeoX, 64, 64)]
    [InlineData(RopeMode.Normal, 100, 46)]
    [InlineData(RopeMode.NeoX, 80, 32)]
    public void Frequency_factors_divide_each_pairs_angle(RopeMode mode, int headDim, int ropeDim)
    {
        const int nHeads = 3;
        int[] positions = [0, 1, 9, 500, 4095, 32767];
        const float freqBase = 500000f, freqScale = 1f;
        // Llama 3.1-like: fast pairs untouched, slow pairs divided by 8, a blend in between; plus one odd value.
        var factors = new float[ropeDim / 2];
        for (int i = 0; i < factors.Length; i++) factors[i] = i < factors.Length / 3 ? 1f : i < 2 * factors.Length / 3 ? 1f + 7f * i / factors.Length : 8f;
        factors[1] = 0.75f;
        var x = TestData.Uniform(positions.Length * nHeads * headDim, 33);
        var expected = Reference(x, positions, nHeads, headDim, ropeDim, freqBase, freqScale, mode, factors);
        var plain = Reference(x, positions, nHeads, headDim, ropeDim, freqBase, freqScale, mode);
        var table = new float[Rope.TableLength(positions.Length, ropeDim)];
        fixed (float* px = x, pt = table, pf = factors)
        {
            Rope.PrecomputeCosSin(positions, ropeDim, freqBase, freqScale, mode, pf, pt);
            Rope.Apply(px, nHeads, headDim, ropeDim, mode, pt, 0, positions.Length);
        }
        TestData.AllClose(expected, x, 0, 2e-6, $"rope {mode} with factors");
        // The factors must matter: the same rows without them are far away.
        double largest = expected.Zip(plain, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(largest > 0.1, $"frequency factors changed no value by more than {largest}");
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(-1f)]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    public void Bad_frequency_factor_is_rejected(float bad)
    {
        float[] factors = [1f, bad];
        var table = new float[Rope.TableLength(1, 4)];
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
        {
            fixed (float* pf = factors, pt = table) Rope.PrecomputeCosSin([3], 4, 10000f, 1f, RopeMode.Normal, pf, pt);
        });
        Assert.Equal("frequencyFactors", ex.ParamName);
        Assert.Contains("factor 1", ex.Message);
    }

    private static double[] Reference(float[] x, int[] positions, int nHeads, int headDim, int ropeDim,
        double freqBase, double freqScale, RopeMode mode, float[]? factors = null)
    {
        var y = x.Select(v => (double)v).ToArray();
        for (int t = 0; t < positions.Length; t++)
            for (int h = 0; h < nHeads; h++)
            {
                int row = (t * nHeads + h) * headDim;
                for (int i = 0; i < ropeDim / 2; i++)
                {
                    double theta = positions[t] * freqScale * Math.Pow(freqBase, -2.0 * i / ropeDim) / (factors?[i] ?? 1f);
                    int a = mode == RopeMode.Normal ? 2 * i : i;
                    int b = mode == RopeMode.Normal ? 2 * i + 1 : i + ropeDim / 2;
                    double x0 = x[row + a], x1 = x[row + b];
                    y[row + a] = x0 * Math.Cos(theta) - x1 * Math.Sin(theta);
                    y[row + b] = x0 * Math.Sin(theta) + x1 * Math.Cos(theta);
                }
            }
        return y;
    }
}

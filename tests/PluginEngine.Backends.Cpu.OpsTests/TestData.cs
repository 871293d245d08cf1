using Xunit;

namespace PluginEngine.Backends.Cpu.OpsTests;

/// <summary>Seeded inputs and tolerance checks shared by the kernel tests.</summary>
internal static class TestData
{
    /// <summary>Row lengths that exercise every vector width and every scalar tail (1 .. 4096+3).</summary>
    public static readonly TheoryData<int> OddLengths = new(1, 7, 33, 100, 4096 + 3);

    public static float[] Uniform(int n, int seed, float low = -1f, float high = 1f)
    {
        var random = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = low + (float)random.NextDouble() * (high - low);
        return a;
    }

    /// <summary>Fails unless |expected - actual| ≤ abs + rel·|expected|, naming the element.</summary>
    public static void Close(double expected, float actual, double rel, double abs, string what, int index)
    {
        double error = Math.Abs(expected - actual);
        if (!(error <= abs + rel * Math.Abs(expected)))
            Assert.Fail($"{what}[{index}]: expected {expected:R}, got {actual:R} (error {error:E3}, allowed {abs + rel * Math.Abs(expected):E3})");
    }

    public static void AllClose(double[] expected, float[] actual, double rel, double abs, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Close(expected[i], actual[i], rel, abs, what, i);
    }
}

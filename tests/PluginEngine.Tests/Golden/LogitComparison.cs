using System.Numerics;
using Xunit;

namespace PluginEngine.Tests.Golden;

/// <summary>
/// How far one row of logits is from an expected row. Errors are stated relative to the largest expected
/// |logit| so one bound serves every model: absolute errors scale with the logits themselves.
/// </summary>
/// <param name="MaxAbsDiff">max_i |actual[i] - expected[i]|.</param>
/// <param name="MaxAbsExpected">max_i |expected[i]|, the scale the error is measured against.</param>
/// <param name="ExpectedArgmax">Most likely token of the expected row.</param>
/// <param name="ActualArgmax">Most likely token of the actual row.</param>
/// <param name="ExpectedMargin">Gap between the expected row's largest and second-largest logit (how clear its argmax is).</param>
/// <param name="Top5Overlap">Tokens the two rows' top-5 sets share (0..5).</param>
public sealed record LogitComparison(double MaxAbsDiff, double MaxAbsExpected, int ExpectedArgmax, int ActualArgmax,
    double ExpectedMargin, int Top5Overlap)
{
    /// <summary>MaxAbsDiff / MaxAbsExpected.</summary>
    public double RelativeError => MaxAbsDiff / MaxAbsExpected;

    /// <summary>
    /// Compares a row with an expected row of doubles (the reference) or floats (llama.cpp, another run of the engine);
    /// fails the test when <paramref name="actual"/> holds NaN or infinity.
    /// </summary>
    public static LogitComparison Of<T>(ReadOnlySpan<float> actual, ReadOnlySpan<T> expected) where T : IFloatingPointIeee754<T>
    {
        Assert.Equal(expected.Length, actual.Length);
        double maxDiff = 0, maxExpected = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (!float.IsFinite(actual[i])) Assert.Fail($"logit {i} is {actual[i]}: the forward pass produced a non-finite value");
            double e = double.CreateChecked(expected[i]);
            maxDiff = Math.Max(maxDiff, Math.Abs(actual[i] - e));
            maxExpected = Math.Max(maxExpected, Math.Abs(e));
        }
        Span<int> expectedTop = stackalloc int[5];
        Span<int> actualTop = stackalloc int[5];
        TopK(expected, expectedTop);
        TopK(actual, actualTop);
        int overlap = 0;
        foreach (int t in actualTop) if (expectedTop.Contains(t)) overlap++;
        double margin = double.CreateChecked(expected[expectedTop[0]] - expected[expectedTop[1]]);
        return new LogitComparison(maxDiff, maxExpected, expectedTop[0], actualTop[0], margin, overlap);
    }

    /// <summary>
    /// Asserts the row is within <paramref name="relativeTolerance"/> of the expected one (relative to the largest
    /// expected |logit|), that it picks the same most likely token unless the expected row's top two are a near tie
    /// (closer than twice the allowed error, so either order is within tolerance), and that at least three of its
    /// five most likely tokens are the expected row's.
    /// </summary>
    /// <remarks>
    /// The bound is the main check (a 20 % change of the attention scale moves logits by about 25 % of the largest one);
    /// the ranking checks say the same thing in terms a reader cares about and give clearer failures.
    /// </remarks>
    public void AssertWithin(double relativeTolerance, string what)
    {
        Assert.True(RelativeError <= relativeTolerance,
            $"{what}: max |diff| {MaxAbsDiff:G4} is {RelativeError:G4} of the largest |logit| {MaxAbsExpected:G4}; allowed {relativeTolerance:G4}");
        double allowed = relativeTolerance * MaxAbsExpected;
        Assert.True(ActualArgmax == ExpectedArgmax || ExpectedMargin < 2 * allowed,
            $"{what}: argmax {ActualArgmax}, expected {ExpectedArgmax}, whose margin over the runner-up ({ExpectedMargin:G4}) is not a near tie (allowed error {allowed:G4})");
        Assert.True(Top5Overlap >= 3, $"{what}: only {Top5Overlap} of the 5 most likely tokens agree");
    }

    /// <summary>Writes the indices of the <c>top.Length</c> largest values into <paramref name="top"/>, largest first.</summary>
    private static void TopK<T>(ReadOnlySpan<T> values, Span<int> top) where T : INumber<T>
    {
        int filled = 0;
        for (int i = 0; i < values.Length; i++)
        {
            int at;
            if (filled < top.Length) at = filled++;
            else if (values[i] > values[top[^1]]) at = top.Length - 1; // evicts the smallest kept value
            else continue;
            while (at > 0 && values[top[at - 1]] < values[i]) { top[at] = top[at - 1]; at--; }
            top[at] = i;
        }
    }
}

/// <summary>The worst of several row comparisons, for the per-case summary line.</summary>
public sealed class LogitErrorSummary
{
    private int _rows, _argmaxAgreements;
    private double _worstRelative, _worstAbsolute, _smallestOverlap = 5;

    /// <summary>Records a row.</summary>
    public void Add(LogitComparison c)
    {
        _rows++;
        if (c.ActualArgmax == c.ExpectedArgmax) _argmaxAgreements++;
        _worstRelative = Math.Max(_worstRelative, c.RelativeError);
        _worstAbsolute = Math.Max(_worstAbsolute, c.MaxAbsDiff);
        _smallestOverlap = Math.Min(_smallestOverlap, c.Top5Overlap);
    }

    /// <summary>The largest <see cref="LogitComparison.RelativeError"/> recorded.</summary>
    public double WorstRelative => _worstRelative;

    /// <summary>
    /// Asserts the argmax agreed on at least three rows in four: near ties may swap the top two (each row checks that
    /// a swap is a near tie), but a graph that agrees with the oracle picks the same token almost everywhere.
    /// </summary>
    public void AssertArgmaxMostlyAgrees(string what)
        => Assert.True(4 * _argmaxAgreements >= 3 * _rows, $"{what}: argmax agreed on only {_argmaxAgreements} of {_rows} rows");

    public override string ToString()
        => $"rows {_rows}: worst max|diff| {_worstAbsolute:G3} ({_worstRelative:G3} of max |logit|), argmax agrees {_argmaxAgreements}/{_rows}, min top-5 overlap {_smallestOverlap}/5";
}

/// <summary>The closing checks of a comparison against llama.cpp that also measured both engines against the exact reference.</summary>
public static class LlamaCppCalibration
{
    /// <summary>
    /// Logs the three summaries, then asserts that the argmax mostly agrees with llama.cpp and that the engine is not much
    /// less accurate than llama.cpp itself: llama.cpp's own distance from the exact reference is the yardstick (measured
    /// ratios 0.45 .. 1.13, so 1.5× leaves room for rounding without hiding a real error).
    /// </summary>
    public static void AssertEngineAsAccurateAsLlamaCpp(string what, LogitErrorSummary vsLlamaCpp, LogitErrorSummary llamaCppError,
                                                         LogitErrorSummary engineError, double relativeTolerance)
    {
        TestContext.Current.TestOutputHelper?.WriteLine($"{what}: {vsLlamaCpp}; tolerance {relativeTolerance:G3}");
        TestContext.Current.TestOutputHelper?.WriteLine($"  llama.cpp vs reference: {llamaCppError}");
        TestContext.Current.TestOutputHelper?.WriteLine($"  engine vs reference:    {engineError}");
        vsLlamaCpp.AssertArgmaxMostlyAgrees(what);
        Assert.True(engineError.WorstRelative <= 1.5 * llamaCppError.WorstRelative,
            $"{what}: the engine is {engineError.WorstRelative:G3} (of max |logit|) from the exact reference, llama.cpp only {llamaCppError.WorstRelative:G3}");
    }
}

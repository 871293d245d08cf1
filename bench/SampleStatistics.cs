namespace PluginEngine.Bench;

/// <summary>Mean and sample standard deviation (n − 1 denominator, like llama-bench; 0 for a single sample).</summary>
public readonly record struct SampleStatistics(double Mean, double StandardDeviation)
{
    /// <summary>Statistics of <paramref name="samples"/> (at least one).</summary>
    public static SampleStatistics Of(ReadOnlySpan<double> samples)
    {
        if (samples.IsEmpty) throw new ArgumentException("no samples", nameof(samples));
        double sum = 0;
        foreach (double s in samples) sum += s;
        double mean = sum / samples.Length;
        if (samples.Length == 1) return new SampleStatistics(mean, 0);
        double squares = 0;
        foreach (double s in samples) squares += (s - mean) * (s - mean);
        return new SampleStatistics(mean, Math.Sqrt(squares / (samples.Length - 1)));
    }
}

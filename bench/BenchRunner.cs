using System.Diagnostics;
using PluginEngine.Core.Inference;

namespace PluginEngine.Bench;

/// <summary>Durations of a test's timed repetitions, in nanoseconds, and the rates they give.</summary>
/// <param name="Test">The test measured.</param>
/// <param name="SamplesNs">One duration per repetition (warm-up excluded).</param>
public sealed record BenchMeasurement(BenchTest Test, IReadOnlyList<long> SamplesNs)
{
    /// <summary>Mean and standard deviation of the durations.</summary>
    public SampleStatistics Nanoseconds => SampleStatistics.Of(SamplesNs.Select(s => (double)s).ToArray());

    /// <summary>Tokens per second of each repetition.</summary>
    public IReadOnlyList<double> SamplesTokensPerSecond => SamplesNs.Select(ns => Test.TimedTokens * 1e9 / Math.Max(ns, 1)).ToArray();

    /// <summary>Mean and standard deviation of the per-repetition rates (llama-bench averages rates, not times).</summary>
    public SampleStatistics TokensPerSecond => SampleStatistics.Of(SamplesTokensPerSecond.ToArray());
}

/// <summary>
/// Times bench tests on a <see cref="LlamaContext"/>. The token ids of a test are one sequence from
/// <see cref="BenchTokens"/> of <see cref="BenchTest.ContextTokens"/> ids: the depth prefix, then the prompt, then the
/// generated tokens. Each repetition resets the context, evaluates the depth prefix untimed, then times the prompt
/// (in chunks of the logical batch size; the context splits them further into its micro-batches) and the generated
/// tokens one by one. Every evaluation reads logits back, so asynchronous backends are synchronized inside the timing.
/// Cancellation is observed between evaluations (an evaluation itself is not interrupted), so an interrupted bench stops
/// within one forward pass.
/// </summary>
public static class BenchRunner
{
    /// <summary>Runs one untimed warm-up repetition, then <paramref name="repetitions"/> timed ones.</summary>
    /// <param name="context">A context with room for <see cref="BenchTest.ContextTokens"/> positions.</param>
    /// <param name="test">What to run.</param>
    /// <param name="batchSize">Logical batch (n_batch): prompt tokens handed to one <see cref="LlamaContext.Evaluate"/> call.</param>
    /// <param name="repetitions">Timed repetitions (at least 1).</param>
    /// <param name="bosTokenId">The model's BOS id (first token of the sequence), or negative for none.</param>
    /// <param name="afterRepetition">Called after each timed repetition with its index (progress reporting); may be null.</param>
    /// <param name="cancellation">Checked between evaluations.</param>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> was cancelled; no partial measurement is returned.</exception>
    public static BenchMeasurement Measure(LlamaContext context, BenchTest test, int batchSize, int repetitions, int bosTokenId,
        Action<int>? afterRepetition = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(test);
        test.Validate();
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        if (test.ContextTokens > context.ContextSize)
            throw new ArgumentException($"{test.Name} needs {test.ContextTokens} context positions; the context has {context.ContextSize}", nameof(test));

        int[] ids = BenchTokens.Create(test.ContextTokens, context.VocabularySize, bosTokenId);
        float[] logits = new float[context.VocabularySize];

        RunOnce(context, test, ids, logits, batchSize, cancellation); // warm-up: JIT tiers, first-touch of buffers, device caches
        var samples = new long[repetitions];
        for (int r = 0; r < repetitions; r++)
        {
            samples[r] = RunOnce(context, test, ids, logits, batchSize, cancellation);
            afterRepetition?.Invoke(r);
        }
        return new BenchMeasurement(test, samples);
    }

    /// <summary>
    /// A concurrent-decode test (<see cref="BenchTest.IsParallel"/>) on a context of at least <see cref="BenchTest.Sequences"/>
    /// slots: per repetition every slot is cleared, each sequence's prompt (<see cref="BenchTest.Depth"/> tokens, its own ids)
    /// is evaluated untimed, then <see cref="BenchTest.GeneratedTokens"/> timed steps each evaluate one token of every sequence
    /// in one <see cref="LlamaContext.EvaluateBatch"/> with every sequence's logits read back.
    /// </summary>
    public static BenchMeasurement MeasureParallel(LlamaContext context, BenchTest test, int repetitions, int bosTokenId,
        Action<int>? afterRepetition = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(test);
        test.Validate();
        if (!test.IsParallel) throw new ArgumentException($"{test.Name} is not a concurrent-decode test", nameof(test));
        ArgumentOutOfRangeException.ThrowIfLessThan(repetitions, 1);
        int n = test.Sequences;
        if (context.Sequences < n || context.BatchSize < n)
            throw new ArgumentException($"{test.Name} needs {n} slots and a batch of {n}; the context has {context.Sequences} and {context.BatchSize}", nameof(test));
        if (test.ContextTokens > context.ContextSize)
            throw new ArgumentException($"{test.Name} needs {test.ContextTokens} positions per slot; the context has {context.ContextSize}", nameof(test));

        // One id sequence per slot (the same generator, shifted by the slot, so no two sequences are alike).
        var ids = new int[n][];
        for (int s = 0; s < n; s++)
        {
            ids[s] = BenchTokens.Create(test.ContextTokens + s, context.VocabularySize, bosTokenId)[s..];
            if (bosTokenId >= 0) ids[s][0] = bosTokenId;
        }
        var logits = new float[(long)n * context.VocabularySize];
        var step = new int[n];
        var sequences = new BatchSequence[n];
        for (int s = 0; s < n; s++) sequences[s] = new BatchSequence(s, 1, WantsLogits: true);

        RunParallelOnce(context, test, ids, step, sequences, logits, cancellation); // warm-up
        var samples = new long[repetitions];
        for (int r = 0; r < repetitions; r++)
        {
            samples[r] = RunParallelOnce(context, test, ids, step, sequences, logits, cancellation);
            afterRepetition?.Invoke(r);
        }
        return new BenchMeasurement(test, samples);
    }

    private static long RunParallelOnce(LlamaContext context, BenchTest test, int[][] ids, int[] step, BatchSequence[] sequences, float[] logits,
        CancellationToken cancellation)
    {
        cancellation.ThrowIfCancellationRequested();
        context.Reset();
        int n = sequences.Length, vocab = context.VocabularySize;
        for (int s = 0; s < n && test.Depth > 0; s++)
            for (int start = 0; start < test.Depth; start += context.BatchSize)
            {
                int count = Math.Min(context.BatchSize, test.Depth - start);
                context.EvaluateBatch(ids[s].AsSpan(start, count), [new BatchSequence(s, count, WantsLogits: start + count == test.Depth)], logits.AsSpan(0, vocab));
            }

        long begin = Stopwatch.GetTimestamp();
        for (int i = 0; i < test.GeneratedTokens; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            for (int s = 0; s < n; s++) step[s] = ids[s][test.Depth + i];
            context.EvaluateBatch(step, sequences, logits);
        }
        long elapsed = Stopwatch.GetTimestamp() - begin;
        return (long)(elapsed * (1e9 / Stopwatch.Frequency));
    }

    /// <summary>One repetition; returns the timed part's duration in nanoseconds.</summary>
    private static long RunOnce(LlamaContext context, BenchTest test, int[] ids, float[] logits, int batchSize, CancellationToken cancellation)
    {
        cancellation.ThrowIfCancellationRequested();
        context.Reset();
        var sequence = ids.AsSpan();
        if (test.Depth > 0) EvaluateInBatches(context, sequence[..test.Depth], logits, batchSize, cancellation);

        long start = Stopwatch.GetTimestamp();
        if (test.PromptTokens > 0) EvaluateInBatches(context, sequence.Slice(test.Depth, test.PromptTokens), logits, batchSize, cancellation);
        int firstGenerated = test.Depth + test.PromptTokens;
        for (int i = 0; i < test.GeneratedTokens; i++)
        {
            cancellation.ThrowIfCancellationRequested(); // one volatile read per token: negligible next to a forward pass
            context.Evaluate(sequence.Slice(firstGenerated + i, 1), logits);
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return (long)(elapsed * (1e9 / Stopwatch.Frequency));
    }

    private static void EvaluateInBatches(LlamaContext context, ReadOnlySpan<int> tokens, float[] logits, int batchSize, CancellationToken cancellation)
    {
        for (int start = 0; start < tokens.Length; start += batchSize)
        {
            cancellation.ThrowIfCancellationRequested();
            context.Evaluate(tokens.Slice(start, Math.Min(batchSize, tokens.Length - start)), logits);
        }
    }
}

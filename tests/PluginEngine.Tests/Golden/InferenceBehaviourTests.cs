using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Models;
using PluginEngine.Core.Sampling;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Golden;

/// <summary>
/// Whole-model behaviour of the CPU backend that does not need an oracle: determinism of greedy and seeded
/// generation, context overflow, and independence of the logits from batch size (which exercises KV-cache
/// positions) and from the CPU thread count.
/// </summary>
[Collection(GoldenCollection.Name)]
public sealed class InferenceBehaviourTests(GoldenModelFixture models)
{
    private static readonly int[] Prompt = ReferenceForwardTests.Prompt;

    private LoadedModel Load(SyntheticWeightType weights = SyntheticWeightType.Q8_0)
        => CpuTestBackend.LoadModel(models.PathFor(GoldenShape.TiedD256, weights));

    private static GenerationResult Generate(LoadedModel model, SamplerSettings settings, int maxTokens = 12)
    {
        using var context = model.CreateContext(new ContextOptions(ContextSize: 64));
        return Generator.Generate(context, model.Tokenizer, Prompt, maxTokens, new Sampler(settings),
            cancellation: TestContext.Current.CancellationToken);
    }

    /// <summary>Temperature 1 with every filter off: every token keeps some probability, so the seed decides a lot.</summary>
    private static SamplerSettings Random(ulong seed) => new() { Temperature = 1f, TopK = 0, TopP = 1f, MinP = 0f, Seed = seed };

    [Fact]
    public void Greedy_generation_is_deterministic_and_starts_with_the_prompt_argmax()
    {
        using var model = Load();
        var first = Generate(model, SamplerSettings.Greedy);
        var second = Generate(model, SamplerSettings.Greedy);

        Assert.True(first.GeneratedTokens > 0);
        Assert.Equal(Prompt, first.Tokens.Take(Prompt.Length));
        Assert.Equal(first.Tokens, second.Tokens);

        // Greedy means argmax: the first generated token is the argmax of the prompt's last logits.
        using var context = model.CreateContext(new ContextOptions(ContextSize: 64));
        var logits = new float[context.VocabularySize];
        context.Evaluate(Prompt, logits);
        Assert.Equal(ArgMax(logits), first.Tokens[Prompt.Length]);
    }

    [Fact]
    public void Seeded_sampling_is_reproducible_and_the_seed_matters()
    {
        using var model = Load();
        var seven = Generate(model, Random(7));
        var sevenAgain = Generate(model, Random(7));
        var eight = Generate(model, Random(8));

        Assert.Equal(12, seven.GeneratedTokens); // EOS is one token in a thousand: with these seeds it is never drawn
        Assert.Equal(seven.Tokens, sevenAgain.Tokens);
        Assert.NotEqual(seven.Tokens, eight.Tokens);
        Assert.NotEqual(seven.Tokens, Generate(model, SamplerSettings.Greedy).Tokens);
    }

    [Fact]
    public void Evaluating_past_the_context_size_throws_ContextOverflowException_and_keeps_the_cache()
    {
        using var model = Load();
        using var context = model.CreateContext(new ContextOptions(ContextSize: 8));
        var logits = new float[context.VocabularySize];
        context.Evaluate(Prompt.AsSpan(0, 6), logits);

        var e = Assert.Throws<ContextOverflowException>(() => context.Evaluate(Prompt.AsSpan(6, 3), logits));
        Assert.Equal("context overflow: 6 cached + 3 new tokens > context size 8", e.Message);
        Assert.Equal(6, context.Position); // nothing of the rejected batch was cached

        // The cache still works, and exactly filling it is allowed; one more token is not.
        context.Evaluate(Prompt.AsSpan(6, 2), logits);
        Assert.Equal(8, context.Position);
        Assert.Throws<ContextOverflowException>(() => context.Evaluate(Prompt.AsSpan(0, 1), logits));

        // A prompt longer than the whole context is rejected up front.
        context.Reset();
        var tooLong = Assert.Throws<ContextOverflowException>(() => context.Evaluate(Prompt, logits));
        Assert.Contains($"{Prompt.Length} new tokens > context size 8", tooLong.Message);
        Assert.Equal(0, context.Position);
    }

    [Fact]
    public void Generation_stops_when_the_context_is_full_instead_of_overflowing()
    {
        using var model = Load();
        using var context = model.CreateContext(new ContextOptions(ContextSize: 14));
        var result = Generator.Generate(context, model.Tokenizer, Prompt, maxTokens: 50, new Sampler(Random(7)),
            cancellation: TestContext.Current.CancellationToken);

        // 10 prompt tokens fill positions 0..9; tokens sampled after positions 9..13 are the 5 that fit (the last
        // sampled token is returned but never evaluated), unless EOS came first.
        Assert.False(result.StoppedAtEndOfSequence);
        Assert.Equal(5, result.GeneratedTokens);
        Assert.Equal(14, context.Position);
    }

    /// <remarks>
    /// Batching changes which kernels run (matrix-vector for n = 1, multi-token kernels for small n, the repacked prompt
    /// kernels from <c>RepackedGemm.MinTokens</c> tokens on) and where the cache is read from. On the CPU every path performs
    /// the same float operations per token (docs/batching.md#batch-invariance-on-the-cpu) and attention computes each
    /// (token, head) the same way whatever its batch, so the three orders give bit-identical logits.
    /// </remarks>
    [Theory]
    [InlineData(SyntheticWeightType.Q8_0, GgmlType.F16)]
    [InlineData(SyntheticWeightType.F16, GgmlType.F32)]
    [InlineData(SyntheticWeightType.Q4_K_M, GgmlType.F16)]
    [InlineData(SyntheticWeightType.Q8_0, GgmlType.Q8_0)] // a quantized cache: each position's row is its own blocks
    [InlineData(SyntheticWeightType.Q4_0, GgmlType.Q4_0)]
    public void Logits_do_not_depend_on_how_the_prompt_is_split_into_batches(SyntheticWeightType weights, GgmlType kvCache)
    {
        using var model = Load(weights);
        int vocab = model.HyperParameters.VocabularySize, n = Prompt.Length;

        var oneBatch = new float[n * vocab];
        using (var context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 32, KvCacheType: kvCache)))
            context.Evaluate(Prompt, oneBatch, allPositions: true);

        var smallBatches = new float[n * vocab]; // batches of 4, 4 and 2 tokens
        using (var context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 4, KvCacheType: kvCache)))
        {
            Assert.Equal(4, context.BatchSize);
            context.Evaluate(Prompt, smallBatches, allPositions: true);
        }

        var tokenByToken = new float[n * vocab];
        using (var context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 32, KvCacheType: kvCache)))
            for (int p = 0; p < n; p++)
                context.Evaluate(Prompt.AsSpan(p, 1), tokenByToken.AsSpan(p * vocab, vocab));

        for (int p = 0; p < n; p++)
        {
            var expected = oneBatch.AsSpan(p * vocab, vocab);
            foreach (var (name, rows) in new[] { ("batches of 4", smallBatches), ("token by token", tokenByToken) })
            {
                var actual = rows.AsSpan(p * vocab, vocab);
                for (int i = 0; i < vocab; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                        $"{weights}: {name}, position {p}, logit {i}: {actual[i]:R}, one batch {expected[i]:R}");
            }
        }
    }

    [Fact]
    public void Logits_do_not_depend_on_the_cpu_thread_count()
    {
        string path = models.PathFor(GoldenShape.SeparateD512, SyntheticWeightType.Q4_K_M);
        float[] Run(IBackendDevice device)
        {
            using var model = CpuTestBackend.LoadModel(path, device);
            using var context = model.CreateContext(new ContextOptions(ContextSize: 32));
            var logits = new float[(Prompt.Length + 1) * context.VocabularySize];
            context.Evaluate(Prompt, logits, allPositions: true);
            context.Evaluate([5], logits.AsSpan(Prompt.Length * context.VocabularySize)); // the vector path too
            return logits;
        }

        var one = Run(CpuTestBackend.Device);
        var two = Run(CpuTestBackend.TwoThreadDevice);
        // Threads split output rows (and heads), never one dot product, so the results are bit-identical.
        Assert.Equal(one, two);
    }

    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}

using System.Diagnostics;
using PluginEngine.Core.Sampling;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Core.Inference;

/// <summary>What a generation did and how long it took.</summary>
public sealed record GenerationResult(
    IReadOnlyList<int> Tokens,
    int PromptTokens,
    TimeSpan PromptTime,
    int GeneratedTokens,
    TimeSpan GenerationTime,
    bool StoppedAtEndOfSequence)
{
    public double PromptTokensPerSecond => PromptTokens / Math.Max(PromptTime.TotalSeconds, 1e-9);
    public double GenerationTokensPerSecond => GeneratedTokens / Math.Max(GenerationTime.TotalSeconds, 1e-9);
}

/// <summary>The generation loop: prompt in one batched pass, then one token at a time, streaming text as it completes.</summary>
public static class Generator
{
    /// <summary>
    /// Evaluates <paramref name="prompt"/> and samples up to <paramref name="maxTokens"/> tokens, stopping at EOS.
    /// <paramref name="onText"/> receives decoded text as soon as whole characters are available.
    /// </summary>
    public static GenerationResult Generate(LlamaContext context, ITokenizer tokenizer, IReadOnlyList<int> prompt, int maxTokens,
        Sampler sampler, Action<string>? onText = null, CancellationToken cancellation = default)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt has no tokens", nameof(prompt));
        if (maxTokens < 0) throw new ArgumentOutOfRangeException(nameof(maxTokens));
        var logits = new float[context.VocabularySize];
        var tokens = new List<int>(prompt);
        var decoder = tokenizer.CreateStreamingDecoder();

        var clock = Stopwatch.StartNew();
        context.Evaluate(prompt.ToArray(), logits);
        var promptTime = clock.Elapsed;

        clock.Restart();
        int generated = 0;
        bool eos = false;
        Span<int> one = stackalloc int[1];
        while (generated < maxTokens)
        {
            cancellation.ThrowIfCancellationRequested();
            int recent = Math.Min(tokens.Count, sampler.Settings.RepeatLastN);
            int next = sampler.Sample(logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(tokens)[^recent..]);
            tokens.Add(next);
            generated++;
            if (next == tokenizer.EosTokenId) { eos = true; break; }
            if (onText is not null && decoder.Append(next) is { Length: > 0 } text) onText(text);
            if (generated == maxTokens || context.Position >= context.ContextSize) break;
            one[0] = next;
            context.Evaluate(one, logits);
        }
        if (onText is not null && decoder.Flush() is { Length: > 0 } rest) onText(rest);
        return new GenerationResult(tokens, prompt.Count, promptTime, generated, clock.Elapsed, eos);
    }
}

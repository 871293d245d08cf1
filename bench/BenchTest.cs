using System.Globalization;

namespace PluginEngine.Bench;

/// <summary>
/// One bench test, with llama-bench's semantics: <c>pp</c> evaluates <see cref="PromptTokens"/> in batches,
/// <c>tg</c> evaluates <see cref="GeneratedTokens"/> one at a time, <c>pg</c> does both in sequence and counts
/// both. <see cref="Depth"/> tokens are put into the KV cache first, untimed.
/// </summary>
/// <param name="PromptTokens">n_prompt: tokens evaluated as a prompt (0 for a tg test).</param>
/// <param name="GeneratedTokens">n_gen: tokens evaluated one at a time (0 for a pp test).</param>
/// <param name="Depth">n_depth: tokens already in the KV cache when the timed part starts.</param>
public sealed record BenchTest(int PromptTokens, int GeneratedTokens, int Depth)
{
    /// <summary>Tokens the timed part processes; tokens/s = this / seconds.</summary>
    public int TimedTokens => PromptTokens + GeneratedTokens;

    /// <summary>KV cache positions the test needs (depth + prompt + generation).</summary>
    public int ContextTokens => Depth + PromptTokens + GeneratedTokens;

    /// <summary>llama-bench's test name: <c>pp512</c>, <c>tg128</c>, <c>pp512+tg128</c>, with <c> @ d1024</c> when there is a depth.</summary>
    public string Name
    {
        get
        {
            string name = (PromptTokens, GeneratedTokens) switch
            {
                ( > 0, 0) => $"pp{PromptTokens}",
                (0, > 0) => $"tg{GeneratedTokens}",
                _ => $"pp{PromptTokens}+tg{GeneratedTokens}",
            };
            return Depth > 0 ? string.Create(CultureInfo.InvariantCulture, $"{name} @ d{Depth}") : name;
        }
    }

    /// <summary>Validates the counts (the command line checks them earlier with option names).</summary>
    public void Validate()
    {
        if (PromptTokens < 0 || GeneratedTokens < 0 || Depth < 0) throw new ArgumentOutOfRangeException(nameof(PromptTokens), $"{Name}: token counts must not be negative");
        if (TimedTokens == 0) throw new ArgumentException("a bench test needs prompt or generated tokens");
    }

    public override string ToString() => Name;
}

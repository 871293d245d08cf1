using System.Globalization;

namespace PluginEngine.Bench;

/// <summary>
/// One bench test, with llama-bench's semantics: <c>pp</c> evaluates <see cref="PromptTokens"/> in batches,
/// <c>tg</c> evaluates <see cref="GeneratedTokens"/> one at a time, <c>pg</c> does both in sequence and counts
/// both. <see cref="Depth"/> tokens are put into the KV cache first, untimed.
/// With <see cref="Sequences"/> &gt; 1 (or a test made by <see cref="Parallel"/>) it is a concurrent-decode test
/// (docs/batching.md#benchmark): that many sequences, each with its own <see cref="Depth"/>-token prompt (untimed), then
/// <see cref="GeneratedTokens"/> steps that each evaluate one token of every sequence in one forward pass.
/// </summary>
/// <param name="PromptTokens">n_prompt: tokens evaluated as a prompt (0 for a tg test).</param>
/// <param name="GeneratedTokens">n_gen: tokens evaluated one at a time (0 for a pp test).</param>
/// <param name="Depth">n_depth: tokens already in the KV cache when the timed part starts (per sequence).</param>
/// <param name="Sequences">Sequences decoded together; 0 = the single-sequence test (the context's plain <c>Evaluate</c>).</param>
public sealed record BenchTest(int PromptTokens, int GeneratedTokens, int Depth, int Sequences = 0)
{
    /// <summary>A concurrent-decode test: <paramref name="sequences"/> sequences, each a <paramref name="prompt"/>-token prompt (untimed) then <paramref name="generated"/> tokens.</summary>
    public static BenchTest Parallel(int sequences, int prompt, int generated) => new(0, generated, prompt, sequences);

    /// <summary>True for a concurrent-decode test.</summary>
    public bool IsParallel => Sequences > 0;

    /// <summary>Tokens the timed part processes (all sequences together); tokens/s = this / seconds.</summary>
    public int TimedTokens => (PromptTokens + GeneratedTokens) * Math.Max(Sequences, 1);

    /// <summary>KV cache positions the test needs (depth + prompt + generation; per sequence).</summary>
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
            if (IsParallel) name = string.Create(CultureInfo.InvariantCulture, $"{name} x{Sequences}");
            return Depth > 0 ? string.Create(CultureInfo.InvariantCulture, $"{name} @ d{Depth}") : name;
        }
    }

    /// <summary>Validates the counts (the command line checks them earlier with option names).</summary>
    public void Validate()
    {
        if (IsParallel && (PromptTokens != 0 || GeneratedTokens == 0)) throw new ArgumentException($"{Name}: a concurrent-decode test generates tokens after an untimed prompt (depth)");
        if (PromptTokens < 0 || GeneratedTokens < 0 || Depth < 0 || Sequences < 0) throw new ArgumentOutOfRangeException(nameof(PromptTokens), $"{Name}: token counts must not be negative");
        if (TimedTokens == 0) throw new ArgumentException("a bench test needs prompt or generated tokens");
    }

    public override string ToString() => Name;
}

namespace PluginEngine.Core.Sampling;

/// <summary>
/// How the next token is chosen from the logits. Defaults follow llama.cpp's. A filter set to its "off"
/// value (top-k 0, top-p 1, min-p 0, repeat penalty 1) is skipped.
/// </summary>
public sealed record SamplerSettings
{
    /// <summary>Divides the logits before the softmax; 0 or less means greedy (always the most likely token).</summary>
    public float Temperature { get; init; } = 0.8f;

    /// <summary>Keep only the K most likely tokens; 0 keeps all.</summary>
    public int TopK { get; init; } = 40;

    /// <summary>Keep the smallest set of most likely tokens whose probabilities sum to at least P; in (0, 1], 1 keeps all.</summary>
    public float TopP { get; init; } = 0.95f;

    /// <summary>Drop tokens whose probability is below MinP times the most likely token's; in [0, 1], 0 keeps all.</summary>
    public float MinP { get; init; } = 0.05f;

    /// <summary>
    /// Penalty for tokens among the last <see cref="RepeatLastN"/>: positive logits are divided by it and negative
    /// ones multiplied (llama.cpp convention); 1 is off. Applied once per distinct token.
    /// </summary>
    public float RepeatPenalty { get; init; } = 1.0f;

    /// <summary>How many of the most recent tokens the repeat penalty looks at; 0 turns it off.</summary>
    public int RepeatLastN { get; init; } = 64;

    /// <summary>Seed of the sampler's random generator; the same seed, settings and logits give the same tokens.</summary>
    public ulong Seed { get; init; } = 0x5EED;

    /// <summary>Greedy decoding: the most likely token, after the repeat penalty.</summary>
    public static SamplerSettings Greedy { get; } = new() { Temperature = 0 };

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting out of range.</summary>
    public void Validate()
    {
        if (float.IsNaN(Temperature) || float.IsInfinity(Temperature))
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be a finite number (0 or less means greedy).");
        if (TopK < 0)
            throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "Top-k must be 0 (off) or positive.");
        if (!(TopP > 0 && TopP <= 1))
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "Top-p must be in (0, 1]; 1 turns it off.");
        if (!(MinP >= 0 && MinP <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinP), MinP, "Min-p must be in [0, 1]; 0 turns it off.");
        if (!(RepeatPenalty > 0) || float.IsInfinity(RepeatPenalty))
            throw new ArgumentOutOfRangeException(nameof(RepeatPenalty), RepeatPenalty, "Repeat penalty must be a positive finite number; 1 turns it off.");
        if (RepeatLastN < 0)
            throw new ArgumentOutOfRangeException(nameof(RepeatLastN), RepeatLastN, "Repeat window must be 0 (off) or positive.");
    }
}

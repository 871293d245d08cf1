namespace PluginEngine.Bench;

/// <summary>
/// The token ids bench tests evaluate: like llama-bench, no tokenizer is involved. The first id is the model's BOS
/// token (when it has one), the rest are pseudo-random ids in [0, vocabulary) from a fixed-seed SplitMix64 stream,
/// so every run, every backend and the llama.cpp reference program evaluate the same ids.
/// </summary>
public static class BenchTokens
{
    /// <summary>The seed of the id stream (fixed: comparable runs need identical inputs).</summary>
    public const ulong Seed = 0x5EED_BE7C_4000_0001;

    /// <summary>Fills <paramref name="destination"/> with the bench ids for a vocabulary of <paramref name="vocabularySize"/>.</summary>
    /// <param name="destination">Where the ids go.</param>
    /// <param name="vocabularySize">Number of tokens in the vocabulary (ids are below this).</param>
    /// <param name="bosTokenId">BOS id placed first, or a negative value for none.</param>
    public static void Fill(Span<int> destination, int vocabularySize, int bosTokenId)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabularySize, 1);
        if (bosTokenId >= vocabularySize) throw new ArgumentOutOfRangeException(nameof(bosTokenId), $"BOS id {bosTokenId} is outside the vocabulary (0..{vocabularySize - 1})");
        ulong state = Seed;
        for (int i = 0; i < destination.Length; i++)
        {
            if (i == 0 && bosTokenId >= 0) { destination[0] = bosTokenId; continue; }
            // SplitMix64 step (Steele, Lea & Flood): small, well-mixed and the same on every platform.
            state += 0x9E3779B97F4A7C15UL;
            ulong z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            destination[i] = (int)(z % (ulong)vocabularySize);
        }
    }

    /// <summary>A new array of <paramref name="count"/> bench ids (see <see cref="Fill"/>).</summary>
    public static int[] Create(int count, int vocabularySize, int bosTokenId)
    {
        var ids = new int[count];
        Fill(ids, vocabularySize, bosTokenId);
        return ids;
    }
}

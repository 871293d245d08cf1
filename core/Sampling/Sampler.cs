namespace PluginEngine.Core.Sampling;

/// <summary>
/// Picks the next token from a row of logits. The chain, in order: repeat penalty over the last N tokens,
/// then (when temperature &gt; 0) top-k, softmax with temperature, top-p, min-p and a draw from a seeded
/// xoshiro256** generator; with temperature ≤ 0 it returns the argmax of the penalized logits.
/// One sampler serves one sequence: it keeps its random state and its buffers between calls, so a call
/// allocates nothing unless the vocabulary grew. Not thread-safe.
/// </summary>
public sealed class Sampler
{
    private Xoshiro256StarStar _random;
    private float[] _logits = [];    // penalized copy of the caller's logits, indexed by token id
    private int[] _ids = [];         // candidate token ids (heap, then candidate list)
    private float[] _weights = [];   // exp((logit - max) / T) per candidate, parallel to _ids
    private bool[] _inWindow = [];   // marks tokens already penalized in this call; cleared before returning

    /// <summary>Validates <paramref name="settings"/> and seeds the generator with <see cref="SamplerSettings.Seed"/>.</summary>
    public Sampler(SamplerSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        Settings = settings;
        _random = new Xoshiro256StarStar(settings.Seed);
    }

    /// <summary>The settings this sampler was built with.</summary>
    public SamplerSettings Settings { get; }

    /// <summary>Restarts the random sequence from the seed, as if the sampler were new.</summary>
    public void Reset() => _random = new Xoshiro256StarStar(Settings.Seed);

    /// <summary>
    /// Returns the chosen token id.
    /// </summary>
    /// <param name="logits">One logit per vocabulary token; NaN is rejected.</param>
    /// <param name="recentTokens">The sequence so far (prompt and output); only its last <see cref="SamplerSettings.RepeatLastN"/> tokens are penalized.</param>
    public int Sample(ReadOnlySpan<float> logits, ReadOnlySpan<int> recentTokens)
    {
        int vocab = logits.Length;
        if (vocab == 0) throw new ArgumentException("Cannot sample from an empty logits row.", nameof(logits));
        EnsureCapacity(vocab);

        var penalized = _logits.AsSpan(0, vocab);
        bool anyAboveNegativeInfinity = false;
        for (int i = 0; i < vocab; i++)
        {
            float logit = logits[i];
            // -inf is a legal mask; NaN or +inf means the forward pass went wrong and would poison the softmax.
            if (float.IsNaN(logit) || float.IsPositiveInfinity(logit))
                throw new ArgumentException($"Logit of token {i} is {logit}; the forward pass produced invalid values.", nameof(logits));
            anyAboveNegativeInfinity |= logit != float.NegativeInfinity;
            penalized[i] = logit;
        }
        if (!anyAboveNegativeInfinity)
            throw new ArgumentException("Every logit is -infinity: no token can be chosen.", nameof(logits));
        ApplyRepeatPenalty(penalized, recentTokens);

        if (Settings.Temperature <= 0)
            return ArgMax(penalized);

        int count = SelectCandidates(vocab);
        float maxLogit = float.NegativeInfinity;
        for (int c = 0; c < count; c++) maxLogit = MathF.Max(maxLogit, _logits[_ids[c]]);

        // Softmax with temperature, unnormalized: the most likely candidate weighs exactly 1.
        float inverseTemperature = 1f / Settings.Temperature;
        double total = 0;
        for (int c = 0; c < count; c++)
            total += _weights[c] = MathF.Exp((_logits[_ids[c]] - maxLogit) * inverseTemperature);

        // Top-p and min-p each keep a most-likely prefix, so the result is the shorter of the two prefixes.
        // Filtering by min-p first is therefore exact as long as top-p's cumulative sums stay relative to the
        // whole top-k set (total), and it leaves only a handful of candidates to sort.
        int end = count;
        if (Settings.MinP > 0)
            end = MinPFilter(count);
        int first = 0;
        if (Settings.TopP < 1)
            first = TopPStart(end, total);
        return Draw(first, end);
    }

    /// <summary>Divides positive and multiplies negative logits of each distinct token of the window once.</summary>
    private void ApplyRepeatPenalty(Span<float> penalized, ReadOnlySpan<int> recentTokens)
    {
        float penalty = Settings.RepeatPenalty;
        if (penalty == 1f || Settings.RepeatLastN == 0 || recentTokens.IsEmpty) return;
        int windowStart = Math.Max(0, recentTokens.Length - Settings.RepeatLastN);
        var window = recentTokens[windowStart..];
        int vocab = penalized.Length;
        try
        {
            for (int i = 0; i < window.Length; i++)
            {
                int token = window[i];
                if ((uint)token >= (uint)vocab)
                    throw new ArgumentOutOfRangeException(nameof(recentTokens), token,
                        $"Recent token at index {windowStart + i} is outside the vocabulary [0, {vocab}).");
                if (_inWindow[token]) continue;
                _inWindow[token] = true;
                float logit = penalized[token];
                penalized[token] = logit > 0 ? logit / penalty : logit * penalty;
            }
        }
        finally
        {
            foreach (int token in window)
                if ((uint)token < (uint)vocab) _inWindow[token] = false;
        }
    }

    /// <summary>Fills _ids with the top-k candidates (all tokens when top-k is off); returns how many.</summary>
    private int SelectCandidates(int vocab)
    {
        int k = Settings.TopK;
        if (k == 0 || k >= vocab)
        {
            for (int i = 0; i < vocab; i++) _ids[i] = i;
            return vocab;
        }
        // A min-heap of the k best so far, worst at the root: O(vocab · log k) instead of a full sort.
        for (int i = 0; i < k; i++)
        {
            _ids[i] = i;
            SiftUp(i);
        }
        for (int i = k; i < vocab; i++)
            if (IsBetter(i, _ids[0]))
            {
                _ids[0] = i;
                SiftDown(0, k);
            }
        return k;
    }

    /// <summary>
    /// Sorts candidates [0, count) by weight (ascending, so the most likely end the range) and returns the start
    /// of the shortest top run whose probability, relative to <paramref name="total"/> (the whole top-k set), reaches
    /// top-p; 0 when even the whole range falls short.
    /// </summary>
    private int TopPStart(int count, double total)
    {
        Array.Sort(_weights, _ids, 0, count);
        double threshold = Settings.TopP * total;
        double cumulative = 0;
        for (int c = count - 1; c > 0; c--)
        {
            cumulative += _weights[c];
            if (cumulative >= threshold) return c;
        }
        return 0;
    }

    /// <summary>Compacts candidates [0, count) to those whose weight (probability relative to the best) is at least min-p; returns how many.</summary>
    private int MinPFilter(int count)
    {
        float minP = Settings.MinP;
        int kept = 0;
        for (int c = 0; c < count; c++)
            if (_weights[c] >= minP)
            {
                _weights[kept] = _weights[c];
                _ids[kept] = _ids[c];
                kept++;
            }
        return kept; // never 0: the best candidate weighs exactly 1 ≥ min-p
    }

    /// <summary>Draws one candidate of [first, end) with probability proportional to its weight.</summary>
    private int Draw(int first, int end)
    {
        double total = 0;
        for (int c = first; c < end; c++) total += _weights[c];
        double target = _random.NextDouble() * total;
        double cumulative = 0;
        for (int c = first; c < end; c++)
        {
            cumulative += _weights[c];
            if (target < cumulative) return _ids[c];
        }
        return _ids[end - 1]; // rounding left target at the very top
    }

    /// <summary>The first token with the largest logit.</summary>
    private static int ArgMax(ReadOnlySpan<float> values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++)
            if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>Token a ranks above token b: higher logit, ties to the lower id (as <see cref="ArgMax"/> does).</summary>
    private bool IsBetter(int a, int b) => _logits[a] > _logits[b] || (_logits[a] == _logits[b] && a < b);

    private void SiftUp(int i)
    {
        while (i > 0)
        {
            int parent = (i - 1) / 2;
            if (!IsBetter(_ids[parent], _ids[i])) break;
            (_ids[parent], _ids[i]) = (_ids[i], _ids[parent]);
            i = parent;
        }
    }

    private void SiftDown(int i, int size)
    {
        while (true)
        {
            int worst = 2 * i + 1;
            if (worst >= size) return;
            int right = worst + 1;
            if (right < size && IsBetter(_ids[worst], _ids[right])) worst = right;
            if (!IsBetter(_ids[i], _ids[worst])) return;
            (_ids[i], _ids[worst]) = (_ids[worst], _ids[i]);
            i = worst;
        }
    }

    private void EnsureCapacity(int vocab)
    {
        if (_logits.Length >= vocab) return;
        _logits = new float[vocab];
        _ids = new int[vocab];
        _weights = new float[vocab];
        _inWindow = new bool[vocab];
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>Which elements of a head RoPE rotates together.</summary>
public enum RopeMode
{
    /// <summary>Adjacent pairs (2i, 2i+1): the original llama layout.</summary>
    Normal = 0,
    /// <summary>Pairs (i, i + ropeDim/2): the GPT-NeoX layout used by Qwen2, Phi and others.</summary>
    NeoX = 2,
}

/// <summary>
/// Rotary position embedding, in place on rows laid out [nTokens][nHeads][headDim]. Work is split in two so
/// the trigonometry is done once per batch, not once per layer and head:
/// <see cref="PrecomputeCosSin"/> fills a caller-provided table per token, and <see cref="Apply"/> rotates any
/// token range of q or k with it. Pair i turns by θ_i = pos · freqScale · freqBase^(-2i/ropeDim) / factor_i, where
/// factor_i is 1 or, for Llama 3.1-style models, the model's per-pair frequency factor (<c>rope_freqs.weight</c>);
/// elements at or past ropeDim are left as they are.
/// </summary>
/// <remarks>
/// The table holds, per token, a factor row C and a factor row S of ropeDim floats each, arranged for the mode
/// so both modes become y[j] = x[j]·C[j] + x[partner(j)]·S[j]: C holds cos θ at both elements of a pair, S
/// holds -sin θ at the pair's first element and +sin θ at its second.
/// </remarks>
public static unsafe class Rope
{
    /// <summary>Floats of table <see cref="PrecomputeCosSin"/> writes for <paramref name="nTokens"/> tokens.</summary>
    public static long TableLength(int nTokens, int ropeDim) => 2L * nTokens * ropeDim;

    /// <summary>
    /// Fills <paramref name="table"/> (<see cref="TableLength"/> floats) for the given token positions.
    /// Angles are computed in double precision so long contexts do not lose phase.
    /// </summary>
    public static void PrecomputeCosSin(ReadOnlySpan<int> positions, int ropeDim, float freqBase, float freqScale, RopeMode mode, float* table)
        => PrecomputeCosSin(positions, ropeDim, freqBase, freqScale, mode, frequencyFactors: null, table);

    /// <summary>
    /// As <see cref="PrecomputeCosSin(ReadOnlySpan{int}, int, float, float, RopeMode, float*)"/>, with pair i's angle divided
    /// by <paramref name="frequencyFactors"/>[i] (ropeDim/2 floats; null means every factor is 1). Pair i is the same
    /// pair in both modes: (2i, 2i+1) or (i, i + ropeDim/2), matching ggml's freq_factors indexing.
    /// </summary>
    public static void PrecomputeCosSin(ReadOnlySpan<int> positions, int ropeDim, float freqBase, float freqScale, RopeMode mode,
        float* frequencyFactors, float* table)
    {
        CheckRopeDim(ropeDim, ropeDim);
        if (!(freqBase > 0)) throw new ArgumentOutOfRangeException(nameof(freqBase), freqBase, "RoPE frequency base must be positive.");
        if (!(freqScale > 0)) throw new ArgumentOutOfRangeException(nameof(freqScale), freqScale, "RoPE frequency scale must be positive.");
        int half = ropeDim / 2;
        if (frequencyFactors != null)
            for (int i = 0; i < half; i++)
                if (!(frequencyFactors[i] > 0) || float.IsInfinity(frequencyFactors[i]))
                    throw new ArgumentOutOfRangeException(nameof(frequencyFactors), frequencyFactors[i], $"RoPE frequency factor {i} must be positive and finite.");
        double logBase = Math.Log(freqBase);
        for (int t = 0; t < positions.Length; t++)
        {
            float* c = table + 2L * t * ropeDim;
            float* s = c + ropeDim;
            double scaledPos = (double)positions[t] * freqScale;
            for (int i = 0; i < half; i++)
            {
                double theta = scaledPos * Math.Exp(-2.0 * i / ropeDim * logBase);
                if (frequencyFactors != null) theta /= frequencyFactors[i];
                (double sin, double cos) = Math.SinCos(theta);
                int first = mode == RopeMode.NeoX ? i : 2 * i;
                int second = mode == RopeMode.NeoX ? i + half : 2 * i + 1;
                c[first] = (float)cos;
                c[second] = (float)cos;
                s[first] = (float)-sin;
                s[second] = (float)sin;
            }
        }
    }

    /// <summary>
    /// Rotates tokens [tokenStart, tokenEnd) of <paramref name="x"/> ([nTokens][nHeads][headDim]) in place with a
    /// table from <see cref="PrecomputeCosSin"/> built for the same ropeDim and mode; the table row of token t is
    /// at t (the same token indexing as x).
    /// </summary>
    public static void Apply(float* x, int nHeads, int headDim, int ropeDim, RopeMode mode, float* table, int tokenStart, int tokenEnd)
    {
        CheckRopeDim(ropeDim, headDim);
        if (nHeads <= 0) throw new ArgumentOutOfRangeException(nameof(nHeads), nHeads, "RoPE needs at least one head.");
        if (tokenStart < 0 || tokenEnd < tokenStart)
            throw new ArgumentOutOfRangeException(nameof(tokenStart), $"Token range [{tokenStart}, {tokenEnd}) is not a valid range.");
        if (mode != RopeMode.Normal && mode != RopeMode.NeoX)
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "Unknown RoPE mode.");

        for (int t = tokenStart; t < tokenEnd; t++)
        {
            float* c = table + 2L * t * ropeDim;
            float* s = c + ropeDim;
            float* row = x + (long)t * nHeads * headDim;
            for (int h = 0; h < nHeads; h++, row += headDim)
            {
                if (mode == RopeMode.NeoX) RotateNeoX(row, c, s, ropeDim / 2);
                else RotateAdjacent(row, c, s, ropeDim);
            }
        }
    }

    /// <summary>Pairs (i, i+half): the partner of a contiguous block is the contiguous block half further on.</summary>
    private static void RotateNeoX(float* x, float* c, float* s, int half)
    {
        float* x2 = x + half;
        float* c2 = c + half;
        float* s2 = s + half;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= half - 16; i += 16)
            {
                var a = Vector512.Load(x + i);
                var b = Vector512.Load(x2 + i);
                (a * Vector512.Load(c + i) + b * Vector512.Load(s + i)).Store(x + i);
                (b * Vector512.Load(c2 + i) + a * Vector512.Load(s2 + i)).Store(x2 + i);
            }
        if (Vector256.IsHardwareAccelerated)
            for (; i <= half - 8; i += 8)
            {
                var a = Vector256.Load(x + i);
                var b = Vector256.Load(x2 + i);
                (a * Vector256.Load(c + i) + b * Vector256.Load(s + i)).Store(x + i);
                (b * Vector256.Load(c2 + i) + a * Vector256.Load(s2 + i)).Store(x2 + i);
            }
        if (Vector128.IsHardwareAccelerated)
            for (; i <= half - 4; i += 4)
            {
                var a = Vector128.Load(x + i);
                var b = Vector128.Load(x2 + i);
                (a * Vector128.Load(c + i) + b * Vector128.Load(s + i)).Store(x + i);
                (b * Vector128.Load(c2 + i) + a * Vector128.Load(s2 + i)).Store(x2 + i);
            }
        for (; i < half; i++)
        {
            float a = x[i], b = x2[i];
            x[i] = a * c[i] + b * s[i];
            x2[i] = b * c2[i] + a * s2[i];
        }
    }

    /// <summary>Pairs (2i, 2i+1): the partner vector is the loaded vector with neighbours swapped.</summary>
    private static void RotateAdjacent(float* x, float* c, float* s, int ropeDim)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var swap = Vector512.Create(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
            for (; i <= ropeDim - 16; i += 16)
            {
                var v = Vector512.Load(x + i);
                (v * Vector512.Load(c + i) + Vector512.Shuffle(v, swap) * Vector512.Load(s + i)).Store(x + i);
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var swap = Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6);
            for (; i <= ropeDim - 8; i += 8)
            {
                var v = Vector256.Load(x + i);
                (v * Vector256.Load(c + i) + Vector256.Shuffle(v, swap) * Vector256.Load(s + i)).Store(x + i);
            }
        }
        if (Vector128.IsHardwareAccelerated)
        {
            var swap = Vector128.Create(1, 0, 3, 2);
            for (; i <= ropeDim - 4; i += 4)
            {
                var v = Vector128.Load(x + i);
                (v * Vector128.Load(c + i) + Vector128.Shuffle(v, swap) * Vector128.Load(s + i)).Store(x + i);
            }
        }
        // ropeDim is even and every vector width is even, so the tail holds whole pairs.
        for (; i < ropeDim; i += 2)
        {
            float a = x[i], b = x[i + 1];
            x[i] = a * c[i] + b * s[i];
            x[i + 1] = b * c[i + 1] + a * s[i + 1];
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void CheckRopeDim(int ropeDim, int headDim)
    {
        if (ropeDim <= 0 || ropeDim % 2 != 0 || ropeDim > headDim)
            throw new ArgumentOutOfRangeException(nameof(ropeDim), ropeDim, $"RoPE dimension must be even, positive and at most the head dimension ({headDim}).");
    }
}

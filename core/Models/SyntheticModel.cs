using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Quantization;
using static PluginEngine.Core.Models.LlamaTensorNames;

namespace PluginEngine.Core.Models;

/// <summary>How the matrices of a generated model are stored.</summary>
public enum SyntheticWeightType
{
    F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K,
    /// <summary>A Q4_K_M-like mix: Q6_K for the output matrix and the attn_v/ffn_down of every other layer, Q4_K elsewhere.</summary>
    Q4_K_M,
}

/// <summary>Shape and contents of a generated llama-architecture model.</summary>
public sealed record SyntheticModelSpec
{
    public string Name { get; init; } = "synthetic";
    public int VocabularySize { get; init; } = 4096;
    public int EmbeddingLength { get; init; } = 256;
    public int BlockCount { get; init; } = 4;
    public int HeadCount { get; init; } = 8;
    public int KvHeadCount { get; init; } = 4;
    public int FeedForwardLength { get; init; } = 768;
    public int ContextLength { get; init; } = 2048;
    public float RopeFrequencyBase { get; init; } = 10000f;
    public SyntheticWeightType WeightType { get; init; } = SyntheticWeightType.Q8_0;
    /// <summary>Output projection present (false: tied to the token embeddings).</summary>
    public bool SeparateOutput { get; init; } = true;
    public ulong Seed { get; init; } = 42;
    /// <summary>GGUF alignment of tensor data (32 by default).</summary>
    public uint Alignment { get; init; } = 32;
    /// <summary>Byte filling alignment gaps (0 by default; tests use other values to make dirty gaps).</summary>
    public byte PaddingByte { get; init; }
    /// <summary>
    /// Values of a <c>rope_freqs.weight</c> tensor written after the other tensors (null, the default: none, and the file
    /// is byte for byte what it was before this option existed). See <see cref="SyntheticModel.Llama3RopeFrequencyFactors"/>.
    /// </summary>
    public IReadOnlyList<float>? RopeFrequencyFactors { get; init; }
    /// <summary>
    /// More metadata written after the vocabulary (null, the default: none), e.g. <c>tokenizer.chat_template</c> or
    /// <c>tokenizer.ggml.eot_token_id</c> for a chat model; a key the generator already writes is rejected.
    /// </summary>
    public IReadOnlyDictionary<string, GgufValue>? ExtraMetadata { get; init; }
    /// <summary>Storage type of <see cref="RopeFrequencyFactors"/>: F32 like llama.cpp writes; tests use others to make malformed files.</summary>
    public GgmlType RopeFrequencyFactorsType { get; init; } = GgmlType.F32;

    /// <summary>The TinyLlama-1.1B shape (vocab 32000, 2048 wide, 22 layers, 32 heads, 4 KV heads, ff 5632) used in benchmarks.</summary>
    public static SyntheticModelSpec TinyLlamaShape(SyntheticWeightType type) => new()
    {
        Name = $"tinyllama-shape-{type}", VocabularySize = 32000, EmbeddingLength = 2048, BlockCount = 22, HeadCount = 32,
        KvHeadCount = 4, FeedForwardLength = 5632, ContextLength = 2048, WeightType = type,
    };

    /// <summary>The Llama-2-7B shape (vocab 32000, 4096 wide, 32 layers, 32 heads, no GQA, ff 11008).</summary>
    public static SyntheticModelSpec Llama2_7BShape(SyntheticWeightType type) => new()
    {
        Name = $"llama2-7b-shape-{type}", VocabularySize = 32000, EmbeddingLength = 4096, BlockCount = 32, HeadCount = 32,
        KvHeadCount = 32, FeedForwardLength = 11008, ContextLength = 4096, WeightType = type,
    };

    /// <summary>The demo model: small enough to generate in a second, big enough to exercise every op.</summary>
    public static SyntheticModelSpec Demo { get; } = new()
    {
        Name = "pluginengine-demo (random weights)", VocabularySize = 4096, EmbeddingLength = 512, BlockCount = 4, HeadCount = 8,
        KvHeadCount = 4, FeedForwardLength = 1536, ContextLength = 2048, WeightType = SyntheticWeightType.Q8_0, Seed = 20261125,
    };
}

/// <summary>
/// Writes deterministic llama-architecture GGUF files with random weights and a small SentencePiece-style vocabulary.
/// Used for the demo model, tests and benchmarks. The weights are scaled so activations stay in a sane range
/// (≈ N(0, 1/fan_in)), which keeps logits finite and comparable across backends — the text they produce is noise.
/// </summary>
/// <summary>How far <see cref="SyntheticModel.Write"/> is: tensors and bytes generated so far, and the time taken.</summary>
public sealed record SyntheticModelProgress(int TensorsDone, int Tensors, long BytesDone, long Bytes, TimeSpan Elapsed)
{
    /// <summary>Time left at the rate so far (bytes per second), or null before any byte is done.</summary>
    public TimeSpan? Remaining => BytesDone <= 0 ? null : Elapsed * ((double)(Bytes - BytesDone) / BytesDone);

    /// <summary>e.g. <c>tensors 45/201, 1.20/3.80 GiB, 12 s left</c>.</summary>
    public override string ToString()
    {
        static string Size(long b) => b >= 1L << 30 ? $"{b / (double)(1L << 30):F2} GiB" : $"{b / (double)(1L << 20):F1} MiB";
        string left = Remaining is { } r ? $", {Math.Ceiling(r.TotalSeconds):F0} s left" : "";
        return string.Create(System.Globalization.CultureInfo.InvariantCulture, $"tensors {TensorsDone}/{Tensors}, {Size(BytesDone)} of {Size(Bytes)}{left}");
    }
}

public static class SyntheticModel
{
    /// <summary>
    /// Writes the model described by <paramref name="spec"/> to <paramref name="path"/>; <paramref name="progress"/> hears
    /// after every tensor generated (tensors and bytes so far, elapsed time).
    /// </summary>
    public static void Write(SyntheticModelSpec spec, string path, Action<SyntheticModelProgress>? progress = null)
    {
        var writer = new GgufWriter(new GgufWriterOptions { Alignment = spec.Alignment, PaddingByte = spec.PaddingByte });
        int d = spec.EmbeddingLength, ff = spec.FeedForwardLength, headSize = d / spec.HeadCount, kvd = spec.KvHeadCount * headSize;
        writer.AddMetadata("general.architecture", GgufValue.String("llama"));
        writer.AddMetadata("general.name", GgufValue.String(spec.Name));
        writer.AddMetadata("general.description", GgufValue.String("generated by PluginEngine: RANDOM WEIGHTS, output is meaningless"));
        writer.AddMetadata("llama.context_length", GgufValue.UInt32((uint)spec.ContextLength));
        writer.AddMetadata("llama.embedding_length", GgufValue.UInt32((uint)d));
        writer.AddMetadata("llama.block_count", GgufValue.UInt32((uint)spec.BlockCount));
        writer.AddMetadata("llama.feed_forward_length", GgufValue.UInt32((uint)ff));
        writer.AddMetadata("llama.attention.head_count", GgufValue.UInt32((uint)spec.HeadCount));
        writer.AddMetadata("llama.attention.head_count_kv", GgufValue.UInt32((uint)spec.KvHeadCount));
        writer.AddMetadata("llama.attention.layer_norm_rms_epsilon", GgufValue.Float32(1e-5f));
        writer.AddMetadata("llama.rope.dimension_count", GgufValue.UInt32((uint)headSize));
        writer.AddMetadata("llama.rope.freq_base", GgufValue.Float32(spec.RopeFrequencyBase));
        writer.AddMetadata("general.file_type", GgufValue.UInt32(FileType(spec.WeightType)));
        AddVocabulary(writer, spec.VocabularySize);
        foreach (var (key, value) in spec.ExtraMetadata ?? new Dictionary<string, GgufValue>()) writer.AddMetadata(key, value);

        // Every tensor has its own seed and every row its own stream, so rows are generated in parallel and the
        // file is still identical on every machine, whatever the thread count.
        var pending = new List<(TensorInfo Info, Func<TensorInfo, byte[]> Generate)>();
        void Matrix(string name, int cols, int rows, GgmlType type) => pending.Add((new TensorInfo(name, type, [cols, rows]), info =>
        {
            ulong tensorSeed = SeedFor(spec.Seed, name);
            float scale = 1f / MathF.Sqrt(cols);
            var bytes = new byte[info.ByteSize];
            Parallel.For(0, rows, () => new float[cols], (r, _, values) =>
            {
                var rng = new SplitMix(tensorSeed + (ulong)r * 0xD1B54A32D192ED03UL);
                for (int i = 0; i < cols; i++) values[i] = rng.NextGaussian() * scale;
                Quantizer.Quantize(type, values, bytes.AsSpan((int)(r * info.RowBytes), (int)info.RowBytes));
                return values;
            }, _ => { });
            return bytes;
        }));
        void Norm(string name, int n) => pending.Add((new TensorInfo(name, GgmlType.F32, [n]), _ =>
        {
            var rng = new SplitMix(SeedFor(spec.Seed, name));
            var values = new float[n];
            for (int i = 0; i < n; i++) values[i] = 1f + 0.1f * rng.NextGaussian();
            return System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        }));

        var main = MainType(spec.WeightType);
        GgmlType Mixed(int layer) => spec.WeightType == SyntheticWeightType.Q4_K_M && layer % 2 == 0 ? GgmlType.Q6_K : main;
        Matrix(TokenEmbedding, d, spec.VocabularySize, main);
        for (int l = 0; l < spec.BlockCount; l++)
        {
            Norm(AttnNorm(l), d);
            Matrix(Q(l), d, d, main);
            Matrix(K(l), d, kvd, main);
            Matrix(V(l), d, kvd, Mixed(l));
            Matrix(AttnOutput(l), d, d, main);
            Norm(FfnNorm(l), d);
            Matrix(FfnGate(l), d, ff, main);
            Matrix(FfnUp(l), d, ff, main);
            Matrix(FfnDown(l), ff, d, Mixed(l));
        }
        Norm(OutputNorm, d);
        if (spec.SeparateOutput)
            Matrix(Output, d, spec.VocabularySize, spec.WeightType == SyntheticWeightType.Q4_K_M ? GgmlType.Q6_K : main);
        if (spec.RopeFrequencyFactors is { } factors)
        {
            pending.Add((new TensorInfo(RopeFrequencies, spec.RopeFrequencyFactorsType, [factors.Count]), info =>
            {
                var bytes = new byte[info.ByteSize];
                Quantizer.Quantize(info.Type, factors.ToArray(), bytes);
                return bytes;
            }));
        }

        // Generating the weights is the long part (seconds for TinyLlama, minutes for 7B): report each tensor.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        long total = pending.Sum(p => p.Info.ByteSize), done = 0;
        for (int i = 0; i < pending.Count; i++)
        {
            var (info, generate) = pending[i];
            writer.AddTensor(info, generate(info));
            done += info.ByteSize;
            progress?.Invoke(new SyntheticModelProgress(i + 1, pending.Count, done, total, clock.Elapsed));
        }


        string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        string temp = path + ".tmp-" + Environment.ProcessId;
        writer.WriteTo(temp);
        File.Move(temp, path, overwrite: true); // atomic: a half-written model is never seen under its name
    }

    /// <summary>
    /// Per-pair frequency factors of Llama 3.1's "llama3" RoPE scaling, as llama.cpp's converter derives them from
    /// <c>rope_scaling</c>: a pair whose wavelength 2π·base^(2i/dims) is shorter than originalContext / highFreqFactor keeps
    /// its frequency (factor 1), one longer than originalContext / lowFreqFactor is slowed by <paramref name="factor"/>, and
    /// in between the two are blended: factor_i = 1 / ((1 - s)/factor + s), s = (originalContext/wavelength - low) / (high - low).
    /// Llama 3.1 uses factor 8, low 1, high 4, original context 8192.
    /// </summary>
    public static float[] Llama3RopeFrequencyFactors(int ropeDims, float freqBase, float factor, float lowFreqFactor, float highFreqFactor, int originalContext)
    {
        if (ropeDims <= 0 || ropeDims % 2 != 0) throw new ArgumentOutOfRangeException(nameof(ropeDims), ropeDims, "RoPE dimensions must be positive and even");
        if (!(factor >= 1) || !(lowFreqFactor > 0) || !(highFreqFactor > lowFreqFactor) || originalContext <= 0)
            throw new ArgumentOutOfRangeException(nameof(factor), $"llama3 RoPE scaling needs factor >= 1, 0 < low < high and a positive original context (got {factor}, {lowFreqFactor}, {highFreqFactor}, {originalContext})");
        double lowFreqWavelength = originalContext / lowFreqFactor, highFreqWavelength = originalContext / highFreqFactor;
        var factors = new float[ropeDims / 2];
        for (int i = 0; i < factors.Length; i++)
        {
            double wavelength = 2 * Math.PI * Math.Pow(freqBase, 2.0 * i / ropeDims);
            if (wavelength < highFreqWavelength) factors[i] = 1f;
            else if (wavelength > lowFreqWavelength) factors[i] = factor;
            else
            {
                double smooth = (originalContext / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                factors[i] = (float)(1 / ((1 - smooth) / factor + smooth));
            }
        }
        return factors;
    }

    /// <summary>A tensor's seed: the model seed mixed with an FNV-1a hash of the tensor name.</summary>
    private static ulong SeedFor(ulong seed, string name)
    {
        ulong h = 0xCBF29CE484222325UL;
        foreach (char c in name) h = (h ^ c) * 0x100000001B3UL;
        return seed ^ h;
    }

    /// <summary>The storage type of most matrices.</summary>
    public static GgmlType MainType(SyntheticWeightType t) => t switch
    {
        SyntheticWeightType.F32 => GgmlType.F32,
        SyntheticWeightType.F16 => GgmlType.F16,
        SyntheticWeightType.BF16 => GgmlType.BF16,
        SyntheticWeightType.Q8_0 => GgmlType.Q8_0,
        SyntheticWeightType.Q4_0 => GgmlType.Q4_0,
        SyntheticWeightType.Q4_K or SyntheticWeightType.Q4_K_M => GgmlType.Q4_K,
        SyntheticWeightType.Q5_K => GgmlType.Q5_K,
        SyntheticWeightType.Q6_K => GgmlType.Q6_K,
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    /// <summary>llama.cpp's general.file_type code for the mix (informational).</summary>
    private static uint FileType(SyntheticWeightType t) => t switch
    {
        SyntheticWeightType.F32 => 0, SyntheticWeightType.F16 => 1, SyntheticWeightType.Q4_0 => 2, SyntheticWeightType.Q8_0 => 7,
        SyntheticWeightType.Q4_K => 14, SyntheticWeightType.Q4_K_M => 15, SyntheticWeightType.Q5_K => 17, SyntheticWeightType.Q6_K => 18,
        SyntheticWeightType.BF16 => 32, _ => 0,
    };

    /// <summary>
    /// A SentencePiece-style vocabulary: &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, the 256 byte-fallback tokens, then pieces from
    /// common English words and letters (with and without the ▁ word marker), padded with letter pairs and triples.
    /// </summary>
    public static void AddVocabulary(GgufWriter writer, int size)
    {
        var tokens = BuildVocabulary(size);
        var scores = new float[tokens.Count];
        var types = new int[tokens.Count];
        for (int i = 0; i < tokens.Count; i++)
        {
            types[i] = i switch { 0 => 2, 1 or 2 => 3, < 259 => 6, _ => 1 };
            scores[i] = i < 259 ? 0f : -(i - 259);
        }
        writer.AddMetadata("tokenizer.ggml.model", GgufValue.String("llama"));
        writer.AddMetadata("tokenizer.ggml.tokens", GgufValue.StringArray(tokens));
        writer.AddMetadata("tokenizer.ggml.scores", GgufValue.Float32Array(scores));
        writer.AddMetadata("tokenizer.ggml.token_type", GgufValue.Int32Array(types));
        writer.AddMetadata("tokenizer.ggml.unknown_token_id", GgufValue.UInt32(0));
        writer.AddMetadata("tokenizer.ggml.bos_token_id", GgufValue.UInt32(1));
        writer.AddMetadata("tokenizer.ggml.eos_token_id", GgufValue.UInt32(2));
        writer.AddMetadata("tokenizer.ggml.add_bos_token", GgufValue.Bool(true));
        writer.AddMetadata("tokenizer.ggml.add_eos_token", GgufValue.Bool(false));
    }

    private static List<string> BuildVocabulary(int size)
    {
        if (size < 300) throw new ArgumentOutOfRangeException(nameof(size), "a synthetic vocabulary needs at least 300 tokens");
        var tokens = new List<string>(size) { "<unk>", "<s>", "</s>" };
        for (int b = 0; b < 256; b++) tokens.Add($"<0x{b:X2}>");
        var seen = new HashSet<string>(tokens);
        void Add(string piece) { if (tokens.Count < size && seen.Add(piece)) tokens.Add(piece); }

        const string words = "the of and to in is was that for it with as on be at by this had not are but from or have an they which one you were her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three";
        foreach (var w in words.Split(' ')) Add("▁" + w);
        const string letters = "etaoinshrdlucmfwypvbgkjqxzETAOINSHRDLUCMFWYPVBGKJQXZ0123456789.,!?;:'\"-()";
        foreach (char c in letters) { Add("▁" + c); Add(c.ToString()); }
        foreach (var w in words.Split(' ')) Add(w);
        const string common = "etaoinshrdlucmfwypvbgk";
        foreach (char a in common) foreach (char b in common) Add($"{a}{b}");
        foreach (char a in common) foreach (char b in common) foreach (char c in common) Add($"{a}{b}{c}");
        for (int i = 0; tokens.Count < size; i++) Add($"▁tok{i}");
        return tokens;
    }

    /// <summary>A small deterministic generator (SplitMix64) so generated files are identical on every machine and .NET version.</summary>
    private sealed class SplitMix(ulong seed)
    {
        private ulong _state = seed;

        private ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        private float NextUniform() => ((Next() >> 40) + 0.5f) / (1UL << 24);

        /// <summary>Standard normal via Box–Muller (one value per call; simple beats fast here).</summary>
        public float NextGaussian() => MathF.Sqrt(-2f * MathF.Log(NextUniform())) * MathF.Cos(2f * MathF.PI * NextUniform());
    }
}

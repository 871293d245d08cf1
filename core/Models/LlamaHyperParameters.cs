using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;

namespace PluginEngine.Core.Models;

/// <summary>
/// The shape of a llama-family model, read from GGUF metadata (<c>{arch}.embedding_length</c> etc.).
/// Architectures: llama (Llama 1/2/3, TinyLlama, Mistral, SmolLM) and qwen2 (NeoX RoPE, QKV biases).
/// </summary>
public sealed record LlamaHyperParameters
{
    /// <summary>Architectures this graph runs.</summary>
    public static readonly IReadOnlyList<string> SupportedArchitectures = ["llama", "qwen2"];

    public required string Architecture { get; init; }
    public required int ContextLength { get; init; }
    public required int EmbeddingLength { get; init; }
    public required int BlockCount { get; init; }
    public required int FeedForwardLength { get; init; }
    public required int HeadCount { get; init; }
    public required int KvHeadCount { get; init; }
    public required int HeadSize { get; init; }
    public required int VocabularySize { get; init; }
    public required float RmsNormEpsilon { get; init; }
    public required RopeParams Rope { get; init; }
    /// <summary>True when q/k/v projections carry biases (qwen2).</summary>
    public required bool HasQkvBias { get; init; }
    /// <summary>
    /// True when the file carries <c>rope_freqs.weight</c>: F32 [Rope.Dims / 2] factors dividing each rotated pair's angle
    /// (llama.cpp's converter writes them for Llama 3.1/3.2's <c>rope_scaling.rope_type = llama3</c>).
    /// </summary>
    public bool HasRopeFrequencyFactors { get; init; }

    /// <summary>Elements of one token's keys (or values): KvHeadCount × HeadSize.</summary>
    public int KvDim => KvHeadCount * HeadSize;

    /// <summary>Elements of one token's queries: HeadCount × HeadSize.</summary>
    public int QDim => HeadCount * HeadSize;

    /// <summary>Tensors every transformer block holds (attention and FFN norms, q, k, v, output, gate, up, down).</summary>
    public const int TensorsPerBlock = 9;

    /// <summary>
    /// Reads the parameters; every missing, mistyped or inconsistent key is a <see cref="ModelFormatException"/> naming
    /// the key and file. Counts are checked against what the file holds (tensors present) before anything is sized by
    /// them, and the float parameters must be finite and positive, so a bad file fails here and not in a kernel.
    /// </summary>
    public static LlamaHyperParameters FromGguf(GgufFile file)
    {
        try
        {
            return Read(file);
        }
        catch (GgufMetadataTypeException e)
        {
            throw new ModelFormatException(file.Path, e.Key ?? "metadata", e.Message);
        }
        catch (GgufMetadataRangeException e)
        {
            throw new ModelFormatException(file.Path, e.Key ?? "metadata", e.Message);
        }
    }

    private static LlamaHyperParameters Read(GgufFile file)
    {
        string arch = file.GetStringOrDefault("general.architecture")
            ?? throw new ModelFormatException(file.Path, "general.architecture", "missing: cannot tell which model graph to use");
        if (!SupportedArchitectures.Contains(arch))
            throw new ModelFormatException(file.Path, "general.architecture", $"'{arch}' is not supported (supported: {string.Join(", ", SupportedArchitectures)})");

        // A positive count that fits in Int32; absent keys take the fallback (null: required).
        int Count(string key, int? fallback = null)
        {
            string full = $"{arch}.{key}";
            if (!file.TryGet(full, out var v))
                return fallback ?? throw new ModelFormatException(file.Path, full, "missing");
            if (v.IsArray || !GgufValueTypes.IsInteger(v.Type))
                throw new ModelFormatException(file.Path, full, $"is {Describe(v)}, expected a positive integer");
            long value = v.Type == GgufValueType.UInt64 && v.AsUInt64() > long.MaxValue ? long.MaxValue : v.AsInt64();
            if (value <= 0 || value > int.MaxValue) throw new ModelFormatException(file.Path, full, $"{v} is out of range (1..{int.MaxValue})");
            return (int)value;
        }
        // A finite, positive float; absent keys take the fallback.
        float Positive(string key, float fallback)
        {
            string full = $"{arch}.{key}";
            if (!file.TryGet(full, out var v)) return fallback;
            if (v.Type is not (GgufValueType.Float32 or GgufValueType.Float64))
                throw new ModelFormatException(file.Path, full, $"is {Describe(v)}, expected a float");
            float value = v.AsFloat32();
            if (!(value > 0) || !float.IsFinite(value)) throw new ModelFormatException(file.Path, full, $"{v} must be finite and positive");
            return value;
        }

        // The block count sizes per-layer tables (schedule, weights, KV cache): check it against the tensors present first.
        int blocks = Count("block_count");
        if (blocks > file.Tensors.Count / TensorsPerBlock)
            throw new ModelFormatException(file.Path, $"{arch}.block_count",
                $"{blocks} blocks, but the file holds only {file.Tensors.Count} tensors ({TensorsPerBlock} per block)");
        if (file.FindTensor(LlamaTensorNames.AttnNorm(blocks - 1)) is null)
            throw new ModelFormatException(file.Path, $"{arch}.block_count", $"{blocks} blocks, but tensor '{LlamaTensorNames.AttnNorm(blocks - 1)}' of the last block is missing");

        var embdTensor = file.FindTensor(LlamaTensorNames.TokenEmbedding)
            ?? throw new ModelFormatException(file.Path, LlamaTensorNames.TokenEmbedding, "tensor missing");
        if (embdTensor.Info.Dims.Count < 2 || embdTensor.Info.Dims[1] > int.MaxValue)
            throw new ModelFormatException(file.Path, LlamaTensorNames.TokenEmbedding, $"shape [{string.Join(", ", embdTensor.Info.Dims)}] is not [embedding_length, vocabulary]");
        int vocab = (int)embdTensor.Info.Dims[1];

        int embd = Count("embedding_length");
        if (embd != embdTensor.Info.Dims[0])
            throw new ModelFormatException(file.Path, $"{arch}.embedding_length", $"{embd}, but {LlamaTensorNames.TokenEmbedding} has {embdTensor.Info.Dims[0]} elements per row");
        int heads = Count("attention.head_count");
        int kvHeads = Count("attention.head_count_kv", heads);
        if (embd % heads != 0) throw new ModelFormatException(file.Path, $"{arch}.attention.head_count", $"{heads} does not divide embedding_length {embd}");
        if (heads % kvHeads != 0) throw new ModelFormatException(file.Path, $"{arch}.attention.head_count_kv", $"{kvHeads} must divide head_count {heads}");
        int headSize = Count("attention.key_length", embd / heads);
        if ((long)headSize * heads > embd * 16L)
            throw new ModelFormatException(file.Path, $"{arch}.attention.key_length", $"{headSize} × head_count {heads} is implausibly large for embedding_length {embd}");
        int ropeDims = Count("rope.dimension_count", headSize);
        if (ropeDims > headSize || ropeDims % 2 != 0)
            throw new ModelFormatException(file.Path, $"{arch}.rope.dimension_count", $"{ropeDims} must be even and at most the head size {headSize}");
        int feedForward = Count("feed_forward_length");
        if (feedForward > embd * 64L)
            throw new ModelFormatException(file.Path, $"{arch}.feed_forward_length", $"{feedForward} is implausibly large for embedding_length {embd}");

        float ropeScale = 1f;
        string scalingKey = $"{arch}.rope.scaling.type";
        switch (file.GetStringOrDefault(scalingKey))
        {
            case null or "none":
                break;
            case "linear":
                ropeScale = 1f / Positive("rope.scaling.factor", 1f);
                break;
            case var other:
                throw new ModelFormatException(file.Path, scalingKey, $"'{other}' is not supported (supported: none, linear; Llama 3.1-style scaling comes as rope_freqs.weight)");
        }

        bool hasRopeFactors = CheckRopeFrequencyFactors(file, ropeDims);

        return new LlamaHyperParameters
        {
            Architecture = arch,
            ContextLength = Count("context_length"),
            EmbeddingLength = embd,
            BlockCount = blocks,
            FeedForwardLength = feedForward,
            HeadCount = heads,
            KvHeadCount = kvHeads,
            HeadSize = headSize,
            VocabularySize = vocab,
            RmsNormEpsilon = Positive("attention.layer_norm_rms_epsilon", 1e-5f),
            Rope = new RopeParams(arch == "qwen2" ? RopeMode.NeoX : RopeMode.Normal, ropeDims, Positive("rope.freq_base", 10000f), ropeScale),
            HasQkvBias = file.FindTensor("blk.0.attn_q.bias") is not null,
            HasRopeFrequencyFactors = hasRopeFactors,
        };
    }

    private static string Describe(GgufValue v) => v.IsArray ? $"an array of {v.ElementType}" : $"a {v.Type}";

    /// <summary>
    /// Whether <c>rope_freqs.weight</c> is present; if it is, it must be F32 with one factor per rotated pair
    /// (<paramref name="ropeDims"/>/2 elements), or the model would rotate with garbage or read past the tensor.
    /// </summary>
    private static bool CheckRopeFrequencyFactors(GgufFile file, int ropeDims)
    {
        const string name = LlamaTensorNames.RopeFrequencies;
        if (file.FindTensor(name) is not { } tensor) return false;
        var info = tensor.Info;
        if (info.Type != GgmlType.F32)
            throw new ModelFormatException(file.Path, name, $"type {info.Type} (data at byte {tensor.FileOffset}); RoPE frequency factors must be F32");
        int pairs = ropeDims / 2;
        if (info.Dims.Count == 0 || info.Dims[0] != pairs || info.Dims.Skip(1).Any(d => d != 1))
            throw new ModelFormatException(file.Path, name,
                $"shape [{string.Join(", ", info.Dims)}] (data at byte {tensor.FileOffset}), but rope.dimension_count {ropeDims} needs [{pairs}]: one factor per rotated pair");
        return true;
    }
}

/// <summary>A model file is a valid GGUF but not a usable model (a key or tensor is missing or inconsistent).</summary>
public sealed class ModelFormatException(string path, string field, string problem)
    : Exception($"{path}: {field}: {problem}")
{
    public string Path { get; } = path;
    public string Field { get; } = field;
}

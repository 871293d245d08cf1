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

    /// <summary>Reads the parameters; every missing or inconsistent key is an error naming the key and file.</summary>
    public static LlamaHyperParameters FromGguf(GgufFile file)
    {
        string arch = file.GetStringOrDefault("general.architecture")
            ?? throw new ModelFormatException(file.Path, "general.architecture", "missing: cannot tell which model graph to use");
        if (!SupportedArchitectures.Contains(arch))
            throw new ModelFormatException(file.Path, "general.architecture", $"'{arch}' is not supported (supported: {string.Join(", ", SupportedArchitectures)})");

        int Required(string key)
        {
            string full = $"{arch}.{key}";
            if (!file.TryGet(full, out var v)) throw new ModelFormatException(file.Path, full, "missing");
            long value = v.AsInt64();
            if (value <= 0 || value > int.MaxValue) throw new ModelFormatException(file.Path, full, $"{value} is out of range");
            return (int)value;
        }

        int embd = Required("embedding_length");
        int heads = Required("attention.head_count");
        int kvHeads = file.TryGet($"{arch}.attention.head_count_kv", out var kv) ? (int)kv.AsInt64() : heads;
        if (embd % heads != 0) throw new ModelFormatException(file.Path, $"{arch}.attention.head_count", $"{heads} does not divide embedding_length {embd}");
        if (kvHeads <= 0 || heads % kvHeads != 0) throw new ModelFormatException(file.Path, $"{arch}.attention.head_count_kv", $"{kvHeads} must divide head_count {heads}");
        int headSize = file.TryGet($"{arch}.attention.key_length", out var kl) ? (int)kl.AsInt64() : embd / heads;
        int ropeDims = file.TryGet($"{arch}.rope.dimension_count", out var rd) ? (int)rd.AsInt64() : headSize;
        if (ropeDims <= 0 || ropeDims > headSize || ropeDims % 2 != 0)
            throw new ModelFormatException(file.Path, $"{arch}.rope.dimension_count", $"{ropeDims} must be even and at most the head size {headSize}");
        float ropeScale = 1f;
        if (file.GetStringOrDefault($"{arch}.rope.scaling.type") is "linear" && file.TryGet($"{arch}.rope.scaling.factor", out var f))
            ropeScale = 1f / f.AsFloat32();

        bool hasRopeFactors = CheckRopeFrequencyFactors(file, ropeDims);

        var embdTensor = file.FindTensor("token_embd.weight")
            ?? throw new ModelFormatException(file.Path, "token_embd.weight", "tensor missing");
        int vocab = checked((int)embdTensor.Info.Dims[1]);

        return new LlamaHyperParameters
        {
            Architecture = arch,
            ContextLength = Required("context_length"),
            EmbeddingLength = embd,
            BlockCount = Required("block_count"),
            FeedForwardLength = Required("feed_forward_length"),
            HeadCount = heads,
            KvHeadCount = kvHeads,
            HeadSize = headSize,
            VocabularySize = vocab,
            RmsNormEpsilon = file.GetFloat32OrDefault($"{arch}.attention.layer_norm_rms_epsilon", 1e-5f),
            Rope = new RopeParams(arch == "qwen2" ? RopeMode.NeoX : RopeMode.Normal, ropeDims,
                file.GetFloat32OrDefault($"{arch}.rope.freq_base", 10000f), ropeScale),
            HasQkvBias = file.FindTensor("blk.0.attn_q.bias") is not null,
            HasRopeFrequencyFactors = hasRopeFactors,
        };
    }

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

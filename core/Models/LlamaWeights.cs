using PluginEngine.Abstractions;
using PluginEngine.Core.Loading;
using N = PluginEngine.Core.Models.LlamaTensorNames;

namespace PluginEngine.Core.Models;

/// <summary>One transformer block's weights (bindings to device buffers). Shapes in ggml order [ne0, ne1].</summary>
public sealed record LlamaLayerWeights(
    TensorBinding AttnNorm,   // F32 [embd]
    TensorBinding Q,          // [embd, qDim]
    TensorBinding K,          // [embd, kvDim]
    TensorBinding V,          // [embd, kvDim]
    TensorBinding? QBias,     // F32 [qDim]   (qwen2)
    TensorBinding? KBias,     // F32 [kvDim]  (qwen2)
    TensorBinding? VBias,     // F32 [kvDim]  (qwen2)
    TensorBinding AttnOutput, // [qDim, embd]
    TensorBinding FfnNorm,    // F32 [embd]
    TensorBinding FfnGate,    // [embd, ff]
    TensorBinding FfnUp,      // [embd, ff]
    TensorBinding FfnDown);   // [ff, embd]

/// <summary>Every weight of a llama-family model, bound and shape-checked.</summary>
public sealed record LlamaWeights(
    TensorBinding TokenEmbedding, // [embd, vocab]
    TensorBinding OutputNorm,     // F32 [embd]
    TensorBinding Output,         // [embd, vocab] (token_embd when the embeddings are tied)
    IReadOnlyList<LlamaLayerWeights> Layers)
{
    /// <summary>F32 [ropeDims/2] per-pair RoPE frequency factors (<c>rope_freqs.weight</c>), or null when the model has none.</summary>
    public TensorBinding? RopeFrequencyFactors { get; init; }

    /// <summary>
    /// The values of <see cref="RopeFrequencyFactors"/> on the host (read back once at load and checked), for the devices
    /// that rotate with them but do not hold the tensor; empty when the model has none.
    /// </summary>
    public ReadOnlyMemory<float> RopeFrequencyFactorValues { get; init; }

    /// <summary>Binds the loaded tensors by name and checks every shape against the hyper-parameters.</summary>
    public static LlamaWeights Bind(LoadedWeights loaded, LlamaHyperParameters hp, string path)
    {
        TensorBinding Get(string name, params long[] dims)
        {
            if (!loaded.Tensors.TryGetValue(name, out var b)) throw new ModelFormatException(path, name, "tensor missing");
            var actual = b.Tensor.Dims;
            if (actual.Count < dims.Length || !dims.Select((d, i) => actual[i] == d).All(x => x) || actual.Skip(dims.Length).Any(d => d != 1))
                throw new ModelFormatException(path, name, $"shape [{string.Join(", ", actual)}] but the model's metadata needs [{string.Join(", ", dims)}]");
            return b;
        }
        TensorBinding Vector(string name, long n)
        {
            var b = Get(name, n);
            if (b.Tensor.Type != GgmlType.F32) throw new ModelFormatException(path, name, $"type {b.Tensor.Type}; norms, biases and RoPE factors must be F32");
            return b;
        }

        int d = hp.EmbeddingLength, qd = hp.QDim, kvd = hp.KvDim, ff = hp.FeedForwardLength, vocab = hp.VocabularySize;
        var embd = Get(N.TokenEmbedding, d, vocab);
        var output = loaded.Tensors.ContainsKey(N.Output) ? Get(N.Output, d, vocab) : embd;
        var layers = new LlamaLayerWeights[hp.BlockCount];
        for (int l = 0; l < layers.Length; l++)
        {
            layers[l] = new LlamaLayerWeights(
                Vector(N.AttnNorm(l), d),
                Get(N.Q(l), d, qd), Get(N.K(l), d, kvd), Get(N.V(l), d, kvd),
                hp.HasQkvBias ? Vector(N.QBias(l), qd) : null,
                hp.HasQkvBias ? Vector(N.KBias(l), kvd) : null,
                hp.HasQkvBias ? Vector(N.VBias(l), kvd) : null,
                Get(N.AttnOutput(l), qd, d),
                Vector(N.FfnNorm(l), d),
                Get(N.FfnGate(l), d, ff), Get(N.FfnUp(l), d, ff), Get(N.FfnDown(l), ff, d));
        }
        return new LlamaWeights(embd, Vector(N.OutputNorm, d), output, layers)
        {
            RopeFrequencyFactors = hp.HasRopeFrequencyFactors ? Vector(N.RopeFrequencies, hp.Rope.Dims / 2) : null,
        };
    }
}

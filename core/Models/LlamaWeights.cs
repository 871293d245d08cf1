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

    /// <summary>One tensor the graph reads: its name, the shape the metadata implies, and whether it is an F32 vector.</summary>
    public readonly record struct ExpectedTensor(string Name, long[] Dims, bool F32Vector, bool Optional = false);

    /// <summary>Every tensor the llama graph reads for <paramref name="hp"/>, in file order of a typical converter.</summary>
    public static IEnumerable<ExpectedTensor> Expected(LlamaHyperParameters hp)
    {
        int d = hp.EmbeddingLength, qd = hp.QDim, kvd = hp.KvDim, ff = hp.FeedForwardLength, vocab = hp.VocabularySize;
        yield return new(N.TokenEmbedding, [d, vocab], false);
        yield return new(N.Output, [d, vocab], false, Optional: true); // absent: tied to token_embd
        yield return new(N.OutputNorm, [d], true);
        if (hp.HasRopeFrequencyFactors) yield return new(N.RopeFrequencies, [hp.Rope.Dims / 2], true);
        for (int l = 0; l < hp.BlockCount; l++)
        {
            yield return new(N.AttnNorm(l), [d], true);
            yield return new(N.Q(l), [d, qd], false);
            yield return new(N.K(l), [d, kvd], false);
            yield return new(N.V(l), [d, kvd], false);
            if (hp.HasQkvBias)
            {
                yield return new(N.QBias(l), [qd], true);
                yield return new(N.KBias(l), [kvd], true);
                yield return new(N.VBias(l), [kvd], true);
            }
            yield return new(N.AttnOutput(l), [qd, d], false);
            yield return new(N.FfnNorm(l), [d], true);
            yield return new(N.FfnGate(l), [d, ff], false);
            yield return new(N.FfnUp(l), [d, ff], false);
            yield return new(N.FfnDown(l), [ff, d], false);
        }
    }

    /// <summary>
    /// Checks that every tensor the graph reads is present with the shape the metadata implies (norms, biases and RoPE
    /// factors F32). <paramref name="find"/> looks a tensor up by name. Used on the file's tensor table before anything
    /// is loaded (so <c>inspect --plan</c> and a load reject the same files) and again on the loaded bindings.
    /// </summary>
    public static void CheckShapes(Func<string, TensorInfo?> find, LlamaHyperParameters hp, string path)
    {
        foreach (var expected in Expected(hp))
        {
            var actual = find(expected.Name);
            if (actual is null)
            {
                if (expected.Optional) continue;
                throw new ModelFormatException(path, expected.Name, "tensor missing");
            }
            var dims = expected.Dims;
            var have = actual.Dims;
            bool matches = have.Count >= dims.Length && !have.Skip(dims.Length).Any(x => x != 1);
            for (int i = 0; matches && i < dims.Length; i++) matches = have[i] == dims[i];
            if (!matches)
                throw new ModelFormatException(path, expected.Name, $"shape [{string.Join(", ", have)}] but the model's metadata needs [{string.Join(", ", dims)}]");
            if (expected.F32Vector && actual.Type != GgmlType.F32)
                throw new ModelFormatException(path, expected.Name, $"type {actual.Type}; norms, biases and RoPE factors must be F32");
        }
    }

    /// <summary>Binds the loaded tensors by name after checking every shape against the hyper-parameters.</summary>
    public static LlamaWeights Bind(LoadedWeights loaded, LlamaHyperParameters hp, string path)
    {
        CheckShapes(name => loaded.Tensors.TryGetValue(name, out var b) ? b.Tensor : null, hp, path);
        TensorBinding Get(string name) => loaded.Tensors[name];
        TensorBinding? Optional(string name) => loaded.Tensors.TryGetValue(name, out var b) ? b : null;

        var embd = Get(N.TokenEmbedding);
        var layers = new LlamaLayerWeights[hp.BlockCount];
        for (int l = 0; l < layers.Length; l++)
        {
            layers[l] = new LlamaLayerWeights(
                Get(N.AttnNorm(l)), Get(N.Q(l)), Get(N.K(l)), Get(N.V(l)),
                hp.HasQkvBias ? Get(N.QBias(l)) : null,
                hp.HasQkvBias ? Get(N.KBias(l)) : null,
                hp.HasQkvBias ? Get(N.VBias(l)) : null,
                Get(N.AttnOutput(l)), Get(N.FfnNorm(l)), Get(N.FfnGate(l)), Get(N.FfnUp(l)), Get(N.FfnDown(l)));
        }
        return new LlamaWeights(embd, Get(N.OutputNorm), Optional(N.Output) ?? embd, layers)
        {
            RopeFrequencyFactors = hp.HasRopeFrequencyFactors ? Get(N.RopeFrequencies) : null,
        };
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Models;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Golden;

/// <summary>
/// The CPU backend's whole forward pass against <see cref="ReferenceLlama"/> (double precision, dequantized weights):
/// every position of a short prompt evaluated as one batch, then single-token decode steps that read the KV cache.
/// </summary>
/// <remarks>
/// Where the two may differ, and so the tolerances (relative to the largest reference |logit|, about 3.5 here):
/// the engine quantizes activations on the fly for quantized weights (Q8_0 blocks of 32 for Q8_0/Q4_0, Q8_K blocks of
/// 256 for K-quants: up to half a step of 1/127 of the block's largest value per element), keeps the KV cache in F16
/// by default (2⁻¹¹ relative rounding of every key and value), accumulates in float32, and carries the error through
/// every layer and the final RMSNorm. The 8-bit rounding dominates: 2–4 % of the largest logit, the same size as
/// llama.cpp's own distance from this reference (measured in <see cref="LlamaCppOracleTests"/>). F16 weights meet
/// float32 activations, so with an F32 KV cache only float32 rounding is left and the bound is tighter by orders of
/// magnitude. Both sides decode the same stored weights, so weight quantization error itself does not count.
/// Sensitivity, checked by breaking the reference on purpose: NeoX instead of normal RoPE pairs moves logits by
/// ~80 % of the largest, a wrong GQA head mapping by ~150 %, a 20 % wrong attention scale by ~25 %.
/// </remarks>
[Collection(GoldenCollection.Name)]
public sealed class ReferenceForwardTests(GoldenModelFixture models)
{
    /// <summary>BOS, then arbitrary ids below every golden vocabulary (1000).</summary>
    public static readonly int[] Prompt = [1, 17, 345, 89, 600, 42, 7, 256, 913, 3];

    /// <summary>Tokens fed one at a time after the prompt.</summary>
    public static readonly int[] DecodeTokens = [5, 300, 77, 999];

    /// <summary>F16 weights, F32 KV cache: float32 accumulation only (measured ≤ 8e-7).</summary>
    private const double Float32Rounding = 1e-5;
    /// <summary>F16 weights, F16 KV cache: keys and values rounded to 11 significant bits (measured ≤ 5.1e-4).</summary>
    private const double HalfKvCache = 2e-3;
    /// <summary>Quantized weights: activations quantized to 8 bits per block, F16 KV (measured 2.3e-2 .. 3.8e-2).</summary>
    private const double QuantizedActivations = 8e-2;
    /// <summary>
    /// F16 weights, Q8_0 or Q4_0 KV cache, the reference's cache rounded through the same blocks (<see cref="KvBlocks"/>): float32
    /// rounding (measured ≤ 5e-7: every element took the same level on both sides), with room for the rare element whose float
    /// and double values fall on either side of a level boundary (one Q4_0 step is an eighth of its block's largest value).
    /// Without the reference's rounding the cache alone moves these logits by about 1.5 % (Q8_0) and 15–30 % (Q4_0) of the largest.
    /// </summary>
    private const double QuantizedKvCache = 2e-3;
    /// <summary>Quantized weights and a quantized cache: the 8-bit activations move k and v by more than a rounding error, so
    /// some elements take a neighbouring Q4_0 level (measured 9.1e-2).</summary>
    private const double QuantizedActivationsAndKv = 0.15;

    [Theory]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.F16, GgmlType.F32, Float32Rounding)]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.F16, GgmlType.F16, HalfKvCache)]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.Q8_0, GgmlType.F16, QuantizedActivations)]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.Q4_K_M, GgmlType.F16, QuantizedActivations)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.F16, GgmlType.F32, Float32Rounding)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.Q4_0, GgmlType.F16, QuantizedActivations)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.Q8_0, GgmlType.F16, QuantizedActivations)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.Q4_K_M, GgmlType.F16, QuantizedActivations)]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.F16, GgmlType.Q8_0, QuantizedKvCache)]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.F16, GgmlType.Q4_0, QuantizedKvCache)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.F16, GgmlType.Q8_0, QuantizedKvCache)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.F16, GgmlType.Q4_0, QuantizedKvCache)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.Q4_0, GgmlType.Q4_0, QuantizedActivationsAndKv)]
    public void Cpu_backend_logits_match_the_scalar_reference(GoldenShape shape, SyntheticWeightType weights, GgmlType kvCache, double relativeTolerance)
    {
        var reference = models.ReferenceFor(shape, weights);
        Assert.Equal(shape == GoldenShape.TiedD256, reference.IsOutputTied); // the shapes cover both output layouts
        int vocab = reference.VocabularySize;
        var session = reference.CreateSession(Prompt.Length + DecodeTokens.Length, kvCache);
        var expected = new double[vocab];

        using var model = CpuTestBackend.LoadModel(models.PathFor(shape, weights));
        using var context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 32, KvCacheType: kvCache));
        var actual = new float[Prompt.Length * vocab];
        var summary = new LogitErrorSummary();

        context.Evaluate(Prompt, actual, allPositions: true);
        for (int p = 0; p < Prompt.Length; p++)
        {
            session.Evaluate(Prompt[p], expected);
            var c = LogitComparison.Of(actual.AsSpan(p * vocab, vocab), expected);
            summary.Add(c);
            c.AssertWithin(relativeTolerance, $"{shape} {weights} KV {kvCache}, prompt position {p}");
        }
        for (int s = 0; s < DecodeTokens.Length; s++)
        {
            context.Evaluate([DecodeTokens[s]], actual.AsSpan(0, vocab));
            session.Evaluate(DecodeTokens[s], expected);
            var c = LogitComparison.Of(actual.AsSpan(0, vocab), expected);
            summary.Add(c);
            c.AssertWithin(relativeTolerance, $"{shape} {weights} KV {kvCache}, decode step {s} (position {Prompt.Length + s})");
        }
        Assert.Equal(Prompt.Length + DecodeTokens.Length, context.Position);
        TestContext.Current.TestOutputHelper?.WriteLine($"{shape} {weights} KV {kvCache}: {summary}; tolerance {relativeTolerance:G3}");
        summary.AssertArgmaxMostlyAgrees($"{shape} {weights} KV {kvCache}");
    }
}

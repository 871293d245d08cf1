using PluginEngine.Core.Inference;
using PluginEngine.Core.Models;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Golden;

/// <summary>
/// The CPU backend against llama.cpp itself (LLamaSharp 0.30.0, CPU build) on the same generated GGUF files:
/// the same token ids (BOS first), every prompt position, then single-token decode steps.
/// Skipped, with the loader's message, only when the native library cannot load on this machine.
/// </summary>
/// <remarks>
/// Both engines quantize activations for quantized weights (Q8_0 for Q8_0/Q4_0, Q8_K for K-quants) and keep an F16
/// KV cache, but their float sums run in different orders, so now and then a value lands on the other side of an
/// 8-bit rounding boundary; that moves it by a whole step, and after a few layers the two engines' quantization noise
/// is largely independent. They therefore differ from each other by about as much as each differs from the exact
/// reference, which this test also measures and uses as the yardstick. For F16 weights llama.cpp rounds activations
/// to F16 before the matmul (this engine keeps float32). Tolerances are relative to the largest llama.cpp |logit|.
/// </remarks>
[Collection(GoldenCollection.Name)]
public sealed class LlamaCppOracleTests(GoldenModelFixture models)
{
    /// <summary>F16 weights: llama.cpp rounds activations to F16 before the matmul (measured 1.3e-3).</summary>
    private const double HalfActivations = 5e-3;
    /// <summary>Quantized weights: 8-bit activation blocks on both sides; a rounding flip anywhere decorrelates the noise (measured 1.9e-2 .. 3.1e-2).</summary>
    private const double QuantizedActivations = 8e-2;

    [Theory]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.F16, HalfActivations)]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.Q8_0, QuantizedActivations)]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.Q4_K_M, QuantizedActivations)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.Q4_0, QuantizedActivations)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.Q8_0, QuantizedActivations)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.Q4_K_M, QuantizedActivations)]
    public void Cpu_backend_logits_match_llama_cpp(GoldenShape shape, SyntheticWeightType weights, double relativeTolerance)
    {
        if (LlamaCppOracle.UnavailableReason is { } why) Assert.Skip(why);
        string path = models.PathFor(shape, weights);
        int[] prompt = ReferenceForwardTests.Prompt, decode = ReferenceForwardTests.DecodeTokens;

        using var oracle = LlamaCppOracle.Open(path, contextSize: 64);
        using var model = CpuTestBackend.LoadModel(path);
        using var context = model.CreateContext(new ContextOptions(ContextSize: 64, BatchSize: 64));
        int vocab = context.VocabularySize;
        Assert.Equal(vocab, oracle.VocabularySize);
        var expected = new float[prompt.Length * vocab];
        var actual = new float[prompt.Length * vocab];
        var summary = new LogitErrorSummary();
        // For scale: how far each engine is from the double-precision reference on the same rows.
        var reference = models.ReferenceFor(shape, weights).CreateSession(prompt.Length + decode.Length);
        var exact = new double[vocab];
        LogitErrorSummary llamaCppError = new(), engineError = new();

        oracle.Evaluate(prompt, expected);
        context.Evaluate(prompt, actual, allPositions: true);
        for (int p = 0; p < prompt.Length; p++)
        {
            var c = LogitComparison.Of(actual.AsSpan(p * vocab, vocab), expected.AsSpan(p * vocab, vocab));
            summary.Add(c);
            reference.Evaluate(prompt[p], exact);
            llamaCppError.Add(LogitComparison.Of(expected.AsSpan(p * vocab, vocab), exact));
            engineError.Add(LogitComparison.Of(actual.AsSpan(p * vocab, vocab), exact));
            c.AssertWithin(relativeTolerance, $"{shape} {weights} vs llama.cpp, prompt position {p}");
        }
        for (int s = 0; s < decode.Length; s++)
        {
            oracle.Evaluate([decode[s]], expected.AsSpan(0, vocab));
            context.Evaluate([decode[s]], actual.AsSpan(0, vocab));
            var c = LogitComparison.Of(actual.AsSpan(0, vocab), expected.AsSpan(0, vocab));
            summary.Add(c);
            reference.Evaluate(decode[s], exact);
            llamaCppError.Add(LogitComparison.Of(expected.AsSpan(0, vocab), exact));
            engineError.Add(LogitComparison.Of(actual.AsSpan(0, vocab), exact));
            c.AssertWithin(relativeTolerance, $"{shape} {weights} vs llama.cpp, decode step {s} (position {prompt.Length + s})");
        }
        LlamaCppCalibration.AssertEngineAsAccurateAsLlamaCpp($"{shape} {weights} vs llama.cpp", summary, llamaCppError, engineError, relativeTolerance);
    }
}

using System.Security.Cryptography;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Plugins;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Golden;

/// <summary>
/// Llama 3.1-style RoPE frequency factors (<c>rope_freqs.weight</c>) end to end: the golden shapes written with and without
/// the tensor, run by the CPU backend and compared with llama.cpp (which reads the tensor for llama models), with the scalar
/// reference, and with themselves; the op fallback for a backend that cannot rotate with factors; malformed tensors.
/// </summary>
/// <remarks>
/// The factors follow Llama 3.1's formula with an original context of 32 positions instead of 8192, so that on these
/// short sequences most pairs are slowed 8× and the factors change the logits by far more than any tolerance.
/// </remarks>
[Collection(GoldenCollection.Name)]
public sealed class RopeFrequencyFactorTests : IDisposable
{
    /// <summary>As in <see cref="LlamaCppOracleTests"/>: llama.cpp rounds activations to F16 for F16 weights.</summary>
    private const double HalfActivations = 5e-3;
    /// <summary>As in <see cref="LlamaCppOracleTests"/>: 8-bit activation blocks on both sides.</summary>
    private const double QuantizedActivations = 8e-2;
    /// <summary>F16 weights, F32 KV cache against the double-precision reference: float32 rounding only.</summary>
    private const double Float32Rounding = 1e-5;

    private readonly string _folder = Path.Combine(Path.GetTempPath(), "pluginengine-ropefreqs-" + Guid.NewGuid().ToString("N"));

    /// <summary>Llama 3.1's factor formula (factor 8, low 1, high 4) scaled to an original context of 32 positions.</summary>
    private static float[] FactorsFor(SyntheticModelSpec spec)
        => SyntheticModel.Llama3RopeFrequencyFactors(spec.EmbeddingLength / spec.HeadCount, spec.RopeFrequencyBase, 8f, 1f, 4f, 32);

    private string Write(SyntheticModelSpec spec, string name)
    {
        string path = Path.Combine(_folder, name + ".gguf");
        SyntheticModel.Write(spec, path);
        return path;
    }

    /// <summary>A golden shape with rope_freqs.weight (or, <paramref name="withFactors"/> false, the same file without it).</summary>
    private string GoldenFile(GoldenShape shape, SyntheticWeightType weights, bool withFactors)
    {
        var spec = GoldenModelFixture.Spec(shape, weights);
        return Write(withFactors ? spec with { RopeFrequencyFactors = FactorsFor(spec) } : spec, $"{shape}-{weights}-{(withFactors ? "factors" : "plain")}");
    }

    [Fact]
    public void Test_factors_slow_most_pairs()
    {
        var factors = FactorsFor(GoldenModelFixture.Spec(GoldenShape.TiedD256, SyntheticWeightType.F16));
        Assert.Equal(16, factors.Length);
        Assert.Equal(1f, factors[0]); // wavelength 2π < 32/4: a fast pair keeps its frequency
        Assert.Equal(8f, factors[^1]); // wavelength ≫ 32: slowed by the full factor
        Assert.InRange(factors[2], 1.01f, 7.99f); // wavelength 2π·10000^(1/8) ≈ 19.9, between 8 and 32: blended
        Assert.True(factors.Count(f => f == 8f) >= 12, $"factors: {string.Join(", ", factors)}");
    }

    [Theory]
    [InlineData(GoldenShape.TiedD256, SyntheticWeightType.F16, HalfActivations)]
    [InlineData(GoldenShape.SeparateD512, SyntheticWeightType.Q8_0, QuantizedActivations)]
    public void Cpu_backend_logits_with_rope_frequency_factors_match_llama_cpp(GoldenShape shape, SyntheticWeightType weights, double relativeTolerance)
    {
        if (LlamaCppOracle.UnavailableReason is { } why) Assert.Skip(why);
        string path = GoldenFile(shape, weights, withFactors: true);
        int[] prompt = ReferenceForwardTests.Prompt, decode = ReferenceForwardTests.DecodeTokens;

        using var model = CpuTestBackend.LoadModel(path);
        Assert.True(model.HyperParameters.HasRopeFrequencyFactors);
        using var context = model.CreateContext(new ContextOptions(ContextSize: 64, BatchSize: 64));
        int vocab = context.VocabularySize;
        var expected = new float[(prompt.Length + decode.Length) * vocab];
        var actual = new float[expected.Length];
        using (var oracle = LlamaCppOracle.Open(path, contextSize: 64))
        {
            Assert.Equal(vocab, oracle.VocabularySize);
            oracle.Evaluate(prompt, expected.AsSpan(0, prompt.Length * vocab));
            for (int s = 0; s < decode.Length; s++) oracle.Evaluate([decode[s]], expected.AsSpan((prompt.Length + s) * vocab, vocab));
        }
        context.Evaluate(prompt, actual.AsSpan(0, prompt.Length * vocab), allPositions: true);
        for (int s = 0; s < decode.Length; s++) context.Evaluate([decode[s]], actual.AsSpan((prompt.Length + s) * vocab, vocab));

        // How far each engine is from the double-precision reference (which divides the angles by the same factors).
        var reference = ReferenceLlama.Load(path);
        Assert.True(reference.HasRopeFactors);
        var session = reference.CreateSession(prompt.Length + decode.Length);
        var exact = new double[vocab];
        LogitErrorSummary summary = new(), llamaCppError = new(), engineError = new();
        int[] tokens = [.. prompt, .. decode];
        for (int p = 0; p < tokens.Length; p++)
        {
            var ours = actual.AsSpan(p * vocab, vocab);
            var theirs = expected.AsSpan(p * vocab, vocab);
            var c = LogitComparison.Of(ours, theirs);
            summary.Add(c);
            session.Evaluate(tokens[p], exact);
            llamaCppError.Add(LogitComparison.Of(theirs, exact));
            engineError.Add(LogitComparison.Of(ours, exact));
            c.AssertWithin(relativeTolerance, $"{shape} {weights} with rope_freqs vs llama.cpp, position {p}");
        }
        LlamaCppCalibration.AssertEngineAsAccurateAsLlamaCpp($"{shape} {weights} with rope_freqs vs llama.cpp", summary, llamaCppError, engineError, relativeTolerance);

        // The agreement means something only if llama.cpp really rotated with the factors: on the same file without
        // the tensor it must land far from the engine's logits (beyond position 0, where every angle is 0 anyway).
        string plainPath = GoldenFile(shape, weights, withFactors: false);
        var plain = new float[prompt.Length * vocab];
        using (var oracle = LlamaCppOracle.Open(plainPath, contextSize: 64)) oracle.Evaluate(prompt, plain);
        double worstWithout = 0;
        for (int p = 1; p < prompt.Length; p++)
            worstWithout = Math.Max(worstWithout, LogitComparison.Of(actual.AsSpan(p * vocab, vocab), plain.AsSpan(p * vocab, vocab)).RelativeError);
        TestContext.Current.TestOutputHelper?.WriteLine($"  llama.cpp without rope_freqs vs engine with: worst {worstWithout:G3} of max |logit|");
        Assert.True(worstWithout > 5 * relativeTolerance,
            $"llama.cpp without rope_freqs is only {worstWithout:G3} (of max |logit|) from the engine with it; the factors should matter far more");
    }

    [Fact]
    public void Rope_frequency_factors_change_the_logits_as_the_reference_does()
    {
        const GoldenShape shape = GoldenShape.TiedD256;
        const SyntheticWeightType weights = SyntheticWeightType.F16;
        string withPath = GoldenFile(shape, weights, withFactors: true), withoutPath = GoldenFile(shape, weights, withFactors: false);
        int[] prompt = ReferenceForwardTests.Prompt;

        float[] Run(string path)
        {
            using var model = CpuTestBackend.LoadModel(path);
            Assert.Equal(path == withPath, model.HyperParameters.HasRopeFrequencyFactors);
            using var context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 32, KvCacheType: GgmlType.F32));
            var logits = new float[prompt.Length * context.VocabularySize];
            context.Evaluate(prompt, logits, allPositions: true);
            return logits;
        }
        float[] with = Run(withPath), without = Run(withoutPath);

        var reference = ReferenceLlama.Load(withPath);
        int vocab = reference.VocabularySize;
        var session = reference.CreateSession(prompt.Length);
        var exact = new double[vocab];
        for (int p = 0; p < prompt.Length; p++)
        {
            session.Evaluate(prompt[p], exact);
            LogitComparison.Of(with.AsSpan(p * vocab, vocab), exact).AssertWithin(Float32Rounding, $"with rope_freqs vs the reference, position {p}");
            var change = LogitComparison.Of(with.AsSpan(p * vocab, vocab), without.AsSpan(p * vocab, vocab));
            if (p == 0)
                Assert.Equal(without.AsSpan(0, vocab), with.AsSpan(0, vocab)); // position 0: every angle is 0, factors or not
            else
                Assert.True(change.RelativeError > 1e-2, $"position {p}: rope_freqs changed the logits by only {change.RelativeError:G3} of max |logit|");
        }
    }

    [Fact]
    public void Backend_without_the_op_rotates_on_the_cpu_with_counted_copies()
    {
        string path = GoldenFile(GoldenShape.TiedD256, SyntheticWeightType.Q8_0, withFactors: true);
        int[] prompt = ReferenceForwardTests.Prompt;
        var cpu = CpuTestBackend.Device;
        var v1 = new ApiV1Device(cpu);
        PluginApiVersions.Record(v1, 0); // what the plugin host records for a plugin built against API 1.0

        float[] Run(IBackendDevice primary, out LoadedModel loaded, out long copies)
        {
            loaded = LoadedModel.Load(path, new ModelLoadOptions(primary, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance);
            using var context = loaded.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 32));
            var logits = new float[(prompt.Length + 1) * context.VocabularySize];
            context.Evaluate(prompt, logits.AsSpan(0, prompt.Length * context.VocabularySize), allPositions: true);
            context.Evaluate([5], logits.AsSpan(prompt.Length * context.VocabularySize)); // one decode step
            copies = context.Transfers.Copies;
            return logits;
        }

        float[] expected = Run(cpu, out var cpuModel, out long cpuCopies);
        using (cpuModel) Assert.Equal(0, cpuCopies);
        float[] actual = Run(v1, out var v1Model, out long v1Copies);
        using (v1Model)
        {
            // The v1 queue claims every F32 op through its catch-all Supports, but never implemented RopeWithFactors:
            // the schedule must notice, keep the tensor on the CPU and say so.
            Assert.False(v1Model.Schedule.RunsRopeFrequencyFactors(v1));
            Assert.Same(cpu, v1Model.Weights.RopeFrequencyFactors!.Device);
            Assert.Contains(v1Model.Schedule.Fallbacks, f => f.Contains(LlamaTensorNames.RopeFrequencies) && f.Contains("api-v1"));
            // q and k of every layer go to the CPU and back, in both forward passes (RopeWithFactors on this queue would throw).
            int layers = v1Model.HyperParameters.BlockCount;
            Assert.Equal(2 * 2 * 2 * layers, v1Copies);
        }
        Assert.Equal(expected, actual); // the same CPU kernels on the same values: bit for bit
    }

    [Fact]
    public void Wrong_type_is_a_model_format_error_naming_the_tensor()
    {
        var spec = SmallSpec() with { RopeFrequencyFactorsType = GgmlType.F16 };
        string path = Write(spec with { RopeFrequencyFactors = Ones(spec) }, "wrong-type");
        var ex = Assert.Throws<ModelFormatException>(() => LlamaHyperParameters.FromGguf(GgufReader.Read(path)));
        Assert.Equal(LlamaTensorNames.RopeFrequencies, ex.Field);
        Assert.Contains(path, ex.Message);
        Assert.Contains("type F16", ex.Message);
        Assert.Contains("must be F32", ex.Message);
        Assert.Throws<ModelFormatException>(() => CpuTestBackend.LoadModel(path).Dispose()); // and loading stops before any buffer
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(1)]
    [InlineData(8)]
    public void Wrong_length_is_a_model_format_error_naming_the_tensor(int extra)
    {
        var spec = SmallSpec();
        int pairs = spec.EmbeddingLength / spec.HeadCount / 2;
        string path = Write(spec with { RopeFrequencyFactors = Enumerable.Repeat(1f, pairs + extra).ToArray() }, $"wrong-length{extra}");
        var ex = Assert.Throws<ModelFormatException>(() => LlamaHyperParameters.FromGguf(GgufReader.Read(path)));
        Assert.Equal(LlamaTensorNames.RopeFrequencies, ex.Field);
        Assert.Contains($"shape [{pairs + extra}]", ex.Message);
        Assert.Contains($"needs [{pairs}]", ex.Message);
    }

    [Theory]
    [InlineData(0f)]
    [InlineData(-2f)]
    [InlineData(float.NaN)]
    public void Non_positive_factor_is_a_model_format_error_naming_the_tensor(float bad)
    {
        var spec = SmallSpec();
        var factors = Ones(spec);
        factors[3] = bad;
        string path = Write(spec with { RopeFrequencyFactors = factors }, $"bad-value-{bad}");
        Assert.True(LlamaHyperParameters.FromGguf(GgufReader.Read(path)).HasRopeFrequencyFactors); // type and shape are fine
        var ex = Assert.Throws<ModelFormatException>(() => CpuTestBackend.LoadModel(path).Dispose());
        Assert.Equal(LlamaTensorNames.RopeFrequencies, ex.Field);
        long at = GgufReader.Read(path).GetTensor(LlamaTensorNames.RopeFrequencies).FileOffset + 3 * sizeof(float);
        Assert.Contains($"factor 3 (at byte {at})", ex.Message);
        Assert.Contains("positive and finite", ex.Message);
    }

    [Fact]
    public void Default_synthetic_files_are_unchanged_by_the_option()
    {
        // Cached demo/bench models and their numbers depend on these bytes: the hashes are of the files the generator wrote
        // before rope_freqs support existed (commit a3dd82c).
        string small = Write(SmallSpec(), "plain"), demo = Write(SyntheticModelSpec.Demo, "demo");
        Assert.Equal("231C4DF8ADBA57D45E9B1023895098F0499B35938EFE94972918C85DA9B4493E", Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(small))));
        Assert.Equal("831DA182AB23EEEECE0CB9F9B75F97AD8466171C17D562AC96621772AC6BEAFC", Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(demo))));
        Assert.Null(GgufReader.Read(small).FindTensor(LlamaTensorNames.RopeFrequencies));
        Assert.False(LlamaHyperParameters.FromGguf(GgufReader.Read(small)).HasRopeFrequencyFactors);
    }

    private static SyntheticModelSpec SmallSpec() => new()
    {
        Name = "rope-freqs-small", VocabularySize = 320, EmbeddingLength = 64, BlockCount = 1, HeadCount = 2, KvHeadCount = 1,
        FeedForwardLength = 128, ContextLength = 64, WeightType = SyntheticWeightType.F32, Seed = 7,
    };

    private static float[] Ones(SyntheticModelSpec spec) => Enumerable.Repeat(1f, spec.EmbeddingLength / spec.HeadCount / 2).ToArray();

    public void Dispose()
    {
        try { if (Directory.Exists(_folder)) Directory.Delete(_folder, recursive: true); }
        catch (IOException) { } // best effort: a leftover temp folder must not fail the run
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>
    /// A backend as plugin API v1 shipped it: the CPU's buffers and kernels behind a queue that predates
    /// <see cref="IComputeQueue.RopeWithFactors"/> (it keeps the throwing default) and whose Supports ends in the usual
    /// catch-all, so it claims <see cref="ComputeOp.RopeFrequencyFactors"/> without implementing it.
    /// </summary>
    private sealed class ApiV1Device(IBackendDevice cpu) : IBackendDevice
    {
        public DeviceDescription Description { get; } = cpu.Description with { Backend = "api-v1", StableId = "api-v1:" + cpu.Description.StableId };
        public IBufferProvider Buffers => cpu.Buffers;
        public IComputeQueue CreateQueue() => new ApiV1Queue(this, cpu.CreateQueue()!);
    }

    private sealed class ApiV1Queue(IBackendDevice device, IComputeQueue inner) : ForwardingQueue(device, inner)
    {
        public override bool Supports(ComputeOp op, GgmlType type) => op switch
        {
            ComputeOp.MatMul or ComputeOp.GetRows or ComputeOp.Attention or ComputeOp.Convert => Inner.Supports(op, type),
            _ => type == GgmlType.F32,
        };
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using Xunit;
using static PluginEngine.Conformance.ConformanceBackends;

namespace PluginEngine.Conformance;

/// <summary>
/// A whole model with Llama 3.1-style RoPE frequency factors (<c>rope_freqs.weight</c>) on every backend, against the CPU
/// reference: all layers on the backend, and split (first layer on the backend, the rest on the CPU). A backend that
/// implements <see cref="ComputeOp.RopeFrequencyFactors"/> rotates on its own device with no copies; one that does not
/// (CUDA today) must still give the same logits, with q and k copied to the CPU and back for that op.
/// </summary>
public abstract class RopeFrequencyFactorModelTests : IDisposable
{
    private static readonly int[] Prompt = [1, 17, 300, 42, 5, 99, 256, 3, 120];
    private const int NextToken = 77;

    /// <summary>
    /// F16 weights, F32 KV cache: both sides compute in float32 but sum in different orders (PoCL measured 2.7e-6 max,
    /// 6.3e-7 rms); the slack is for GPUs with other summation orders. The factors themselves move the logits by more
    /// than ten times the tolerance (checked below), so a backend that ignores or misindexes them fails.
    /// </summary>
    private const double MaxTolerance = 1e-3, RmsTolerance = 3e-4;

    private readonly string _dir = Directory.CreateTempSubdirectory("pe-ropefreqs-").FullName;

    public static TheoryData<string, int> Cases
    {
        get
        {
            var data = new TheoryData<string, int>();
            foreach (string backend in Candidates)
            {
                data.Add(backend, -1); // every layer on the backend
                data.Add(backend, 1);  // layer 0 on the backend, layer 1 on the CPU
            }
            return data;
        }
    }

    private string Write(bool withFactors)
    {
        var spec = new SyntheticModelSpec
        {
            Name = "rope-freqs-conformance", VocabularySize = 512, EmbeddingLength = 256, BlockCount = 2, HeadCount = 4, KvHeadCount = 2,
            FeedForwardLength = 512, ContextLength = 128, RopeFrequencyBase = 500000f, WeightType = SyntheticWeightType.F16, Seed = 31,
        };
        // Llama 3.1's formula (factor 8, low 1, high 4) with an original context of 16 so these short sequences feel it.
        if (withFactors) spec = spec with { RopeFrequencyFactors = SyntheticModel.Llama3RopeFrequencyFactors(64, 500000f, 8f, 1f, 4f, 16) };
        string path = Path.Combine(_dir, withFactors ? "factors.gguf" : "plain.gguf");
        SyntheticModel.Write(spec, path);
        return path;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Model_with_rope_frequency_factors_matches_cpu(string backend, int gpuLayers)
    {
        var device = Require(backend);
        string path = Write(withFactors: true);
        float[][] cpu = Run(Reference, -1, path, (_, _) => { });
        float[][] actual = Run(device, gpuLayers, path, (model, context) =>
        {
            Assert.True(model.HyperParameters.HasRopeFrequencyFactors);
            bool native = model.Schedule.RunsRopeFrequencyFactors(device);
            TestContext.Current.TestOutputHelper?.WriteLine($"{backend} -ngl {gpuLayers}: rotates with factors on device: {native}; transfers {context.Transfers}");
            TestContext.Current.TestOutputHelper?.WriteLine(model.Schedule.Describe());
            if (!native)
                Assert.Contains(model.Schedule.Fallbacks, f => f.Contains(LlamaTensorNames.RopeFrequencies) && f.Contains(backend));
            int layersOnDevice = gpuLayers < 0 ? model.HyperParameters.BlockCount : gpuLayers;
            if (gpuLayers < 0)
                // Two forward passes; without the op, q and k of every layer go to the CPU and back in each.
                Assert.Equal(native ? 0 : 2 * 2 * 2 * layersOnDevice, context.Transfers.Copies);
        });

        for (int step = 0; step < cpu.Length; step++)
            TestData.AssertClose(cpu[step], actual[step], MaxTolerance, RmsTolerance, $"{backend} -ngl {gpuLayers} rope_freqs logits step {step} vs cpu");

        // The comparison is only meaningful if the factors matter far more than the tolerance.
        float[][] plain = Run(Reference, -1, Write(withFactors: false), (_, _) => { });
        double moved = cpu[0].Zip(plain[0], (a, b) => Math.Abs(a - b)).Max() / Math.Sqrt(cpu[0].Average(v => (double)v * v));
        Assert.True(moved > 10 * MaxTolerance, $"rope_freqs moved the CPU's logits by only {moved:G3} x rms");
    }

    /// <summary>
    /// Loads the model (<paramref name="gpuLayers"/> on <paramref name="device"/>, the rest on the CPU), evaluates the
    /// prompt (one batch, every position's logits concatenated) and one more token (batch 1).
    /// </summary>
    private static float[][] Run(IBackendDevice device, int gpuLayers, string path, Action<LoadedModel, LlamaContext> inspect)
    {
        using var model = LoadedModel.Load(path, new ModelLoadOptions(device, Reference, gpuLayers, LoadOptions.Default), SystemMappingFactory.Instance);
        using var context = model.CreateContext(new ContextOptions(ContextSize: 64, BatchSize: 16, KvCacheType: GgmlType.F32));
        int vocab = model.HyperParameters.VocabularySize;
        var prompt = new float[Prompt.Length * vocab];
        var next = new float[vocab];
        context.Evaluate(Prompt, prompt, allPositions: true);
        context.Evaluate([NextToken], next);
        inspect(model, context);
        return [prompt, next];
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

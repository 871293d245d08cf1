using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Inference;

/// <summary>
/// Per-op CPU fallback: a backend that supports only some ops runs a model anyway — every op it lacks runs on the CPU with
/// the activations copied there and back (counted, listed in the plan) — and gives the CPU's logits bit for bit (the same
/// kernels on the same values). Without a CPU backend, a backend that lacks an op is refused at load with the list of
/// missing ops, never in the middle of a run.
/// </summary>
public sealed class OpFallbackTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "pluginengine-opfallback-" + Guid.NewGuid().ToString("N"));

    // The synthetic generator writes no qwen2-style q/k/v biases, so AddBias's fallback (same path as RmsNorm's: the bias is
    // placed on the CPU) is not exercised here; `biases` stays for when it can.
    private string Model(bool biases = false)
    {
        Directory.CreateDirectory(_folder);
        string path = Path.Combine(_folder, $"model-{biases}.gguf");
        if (!File.Exists(path))
            SyntheticModel.Write(new SyntheticModelSpec
            {
                Name = "op-fallback", VocabularySize = 320, EmbeddingLength = 64, BlockCount = 2, HeadCount = 4, KvHeadCount = 2,
                FeedForwardLength = 128, ContextLength = 64, WeightType = SyntheticWeightType.Q8_0, Seed = 11,
            }, path);
        return path;
    }

    private static readonly int[] Prompt = [1, 17, 250, 3, 99, 42];

    private static float[] Run(string path, IBackendDevice primary, IBackendDevice? cpu, GgmlType kv, out LoadedModel model, out LlamaContext context)
    {
        model = LoadedModel.Load(path, new ModelLoadOptions(primary, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance);
        context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 8, KvCacheType: kv));
        int vocab = context.VocabularySize;
        var logits = new float[(Prompt.Length + 1) * vocab];
        context.Evaluate(Prompt, logits.AsSpan(0, Prompt.Length * vocab), allPositions: true);
        context.Evaluate([5], logits.AsSpan(Prompt.Length * vocab)); // one decode step
        return logits;
    }

    public static TheoryData<string, bool, GgmlType> Subsets => new()
    {
        { "GetRows,MatMul", false, GgmlType.F16 },          // a backend that starts with matmul only: everything else on the CPU
        { "GetRows,MatMul,RmsNorm,SiluMul,Add,Convert,Attention", false, GgmlType.F16 }, // no Rope
        { "GetRows,MatMul,RmsNorm,Rope,SiluMul,Add", false, GgmlType.F32 }, // no Attention/Convert: the KV cache lives on the CPU
        { "GetRows,MatMul,RmsNorm,Rope,SiluMul,Convert,Attention", false, GgmlType.F16 }, // no Add (the residual adds and MatMulAdd)
        { "", false, GgmlType.F16 },                        // nothing at all: even the weights go to the CPU
    };

    [Theory]
    [MemberData(nameof(Subsets))]
    public void Partial_backend_runs_with_every_missing_op_on_the_cpu(string ops, bool biases, GgmlType kv)
    {
        var cpu = CpuTestBackend.Device;
        var supported = ops.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(Enum.Parse<ComputeOp>).ToHashSet();
        var partial = new PartialDevice(cpu, supported);
        string path = Model(biases);

        float[] expected = Run(path, cpu, cpu, kv, out var cpuModel, out var cpuContext);
        using (cpuModel)
        using (cpuContext)
        {
            Assert.Empty(cpuContext.OpFallbackCounts);
            Assert.Empty(cpuContext.OpFallbackPlan);
        }
        float[] actual = Run(path, partial, cpu, kv, out var model, out var context);
        using (model)
        using (context)
        {
            var missing = new[] { ComputeOp.RmsNorm, ComputeOp.Rope, ComputeOp.SiluMul, ComputeOp.Add, ComputeOp.Attention }
                .Where(op => !supported.Contains(op)).ToList();
            if (biases && !supported.Contains(ComputeOp.AddBias)) missing.Add(ComputeOp.AddBias);
            string plan = model.Schedule.Describe(kv);
            foreach (var op in missing)
            {
                Assert.Contains($"{op} (", plan); // the plan lists each op that runs on the CPU
                // Without Attention the whole attention block (RoPE included) runs on the CPU beside its KV cache, counted as Attention.
                if (op == ComputeOp.Rope && missing.Contains(ComputeOp.Attention)) continue;
                Assert.True(context.OpFallbackCounts.GetValueOrDefault(op) > 0, $"{op} never ran on the CPU: {string.Join(", ", context.OpFallbackCounts)}");
            }
            Assert.Contains(context.OpFallbackPlan, l => l.StartsWith("partial runs on cpu: ", StringComparison.Ordinal));
            if (!supported.Contains(ComputeOp.MatMul)) // the weights too, one plan line for all those of one reason
                Assert.Matches(@"fallback: 15 tensors \(Q8_0\) on cpu: partial does not support MatMul for Q8_0 \(\S+ … \S+\)", plan);
            Assert.True(context.Transfers.Copies > 0);
            foreach (var op in context.OpFallbackCounts.Keys) Assert.DoesNotContain(op, supported);
        }
        Assert.Equal(expected, actual); // the same CPU kernels on the same values: bit for bit
    }

    [Fact]
    public void Without_a_cpu_backend_a_partial_backend_is_refused_at_load_with_the_missing_ops()
    {
        var partial = new PartialDevice(CpuTestBackend.Device, [ComputeOp.GetRows, ComputeOp.MatMul, ComputeOp.RmsNorm, ComputeOp.SiluMul, ComputeOp.Add]);
        var e = Assert.Throws<MissingOpsException>(() => Run(Model(), partial, cpu: null, GgmlType.F16, out _, out _));
        Assert.Contains("backend 'partial' cannot run this model without the cpu backend (not loaded): missing ops: Rope (F32), Attention (F16), Convert (F16)", e.Message);
    }

    [Fact]
    public void Without_a_cpu_backend_a_complete_backend_runs_alone()
    {
        var cpu = CpuTestBackend.Device;
        var all = new PartialDevice(cpu, Enum.GetValues<ComputeOp>().ToHashSet());
        float[] expected = Run(Model(), cpu, cpu, GgmlType.F16, out var m1, out var c1);
        using (m1) using (c1) { }
        float[] actual = Run(Model(), all, cpu: null, GgmlType.F16, out var m2, out var c2);
        using (m2)
        using (c2)
        {
            Assert.Null(m2.Schedule.Cpu);
            Assert.Equal(0, c2.Transfers.Copies);
        }
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Partial_offload_without_a_cpu_backend_is_refused()
    {
        var all = new PartialDevice(CpuTestBackend.Device, Enum.GetValues<ComputeOp>().ToHashSet());
        var e = Assert.Throws<MissingOpsException>(() => LoadedModel.Load(Model(), new ModelLoadOptions(all, null, GpuLayers: 1, LoadOptions.Default), SystemMappingFactory.Instance, cancellation: TestContext.Current.CancellationToken));
        Assert.Contains("-ngl 1", e.Message);
        Assert.Contains("cpu backend, which is not loaded", e.Message);
    }

    public void Dispose()
    {
        try { if (Directory.Exists(_folder)) Directory.Delete(_folder, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

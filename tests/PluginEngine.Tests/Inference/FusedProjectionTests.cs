using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Plugins;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Inference;

/// <summary>
/// The forward pass's use of <see cref="IComputeQueue.MatMulRopeAndStoreKv"/> (API 1.3): called once per layer of every
/// single-sequence step on a plugin of API 1.3, never on an older one (which gets MatMulShared then RopeAndStoreKv, as
/// before) nor for a batch of several sequences (the segment ops), and the logits are the CPU's bit for bit either way (its
/// default runs the same kernels on the same values).
/// </summary>
public sealed class FusedProjectionTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("pe-fused-projection-").FullName;

    public void Dispose() => Directory.Delete(_folder, true);

    /// <summary>The CPU's buffers and kernels, counting the fused projection calls.</summary>
    private sealed class CountingDevice(IBackendDevice cpu) : IBackendDevice
    {
        public DeviceDescription Description { get; } = cpu.Description with { Backend = "counting", StableId = "counting:0", Kind = DeviceKind.Accelerator };
        public IBufferProvider Buffers => cpu.Buffers;
        public int Calls;
        public IComputeQueue CreateQueue() => new CountingQueue(this, cpu.CreateQueue()!);
    }

    private sealed class CountingQueue(CountingDevice device, IComputeQueue inner) : ForwardingQueue(device, inner), IComputeQueue
    {
        public void MatMulRopeAndStoreKv(DeviceTensor x, long cols, MatMulTarget q, MatMulTarget k, MatMulTarget v, DeviceTensor kCache, DeviceTensor vCache,
                                         AttentionParams p, RopeParams rope, DeviceTensor? factors)
        {
            device.Calls++;
            ((IComputeQueue)this).MatMulShared(x, cols, p.Tokens, [q, k, v]);
            ((IComputeQueue)this).RopeAndStoreKv(q.Output, k.Output, v.Output, kCache, vCache, p, rope, factors);
        }
    }

    private static readonly int[] Prompt = [1, 17, 250, 3, 99, 42];

    private LoadedModel Load(IBackendDevice device)
    {
        string path = Path.Combine(_folder, "model.gguf");
        if (!File.Exists(path))
            SyntheticModel.Write(new SyntheticModelSpec
            {
                Name = "fused-projection", VocabularySize = 320, EmbeddingLength = 64, BlockCount = 3, HeadCount = 4, KvHeadCount = 2,
                FeedForwardLength = 128, ContextLength = 64, WeightType = SyntheticWeightType.Q8_0, Seed = 13,
            }, path);
        return LoadedModel.Load(path, new ModelLoadOptions(device, CpuTestBackend.Device, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance);
    }

    private float[] Logits(IBackendDevice device)
    {
        using var model = Load(device);
        using var context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 8));
        int vocab = context.VocabularySize;
        var logits = new float[(Prompt.Length + 2) * vocab];
        context.Evaluate(Prompt, logits.AsSpan(0, Prompt.Length * vocab), allPositions: true); // one prompt batch
        context.Evaluate([5], logits.AsSpan(Prompt.Length * vocab, vocab));                   // two decode steps
        context.Evaluate([9], logits.AsSpan((Prompt.Length + 1) * vocab));
        return logits;
    }

    [Theory]
    [InlineData(3, 9)] // API 1.3: once per layer of each of the three steps
    [InlineData(2, 0)] // API 1.2: never, the two ops as before
    public void The_fused_projection_is_called_from_api_1_3_and_gives_the_cpus_logits(int minor, int calls)
    {
        var device = new CountingDevice(CpuTestBackend.Device);
        PluginApiVersions.Record(device, minor);
        float[] expected = Logits(CpuTestBackend.Device);
        float[] actual = Logits(device);
        Assert.Equal(expected, actual);
        Assert.Equal(calls, device.Calls);
    }

    [Fact]
    public void A_batch_of_several_sequences_takes_the_segment_ops_instead()
    {
        var device = new CountingDevice(CpuTestBackend.Device);
        float[] Run(IBackendDevice d)
        {
            using var model = Load(d);
            using var context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 8), sequences: 2);
            var logits = new float[2 * context.VocabularySize];
            context.EvaluateBatch([1, 17, 250, 3, 99], [new BatchSequence(0, 2, WantsLogits: true), new BatchSequence(1, 3, WantsLogits: true)], logits);
            context.EvaluateBatch([5], [new BatchSequence(1, 1, WantsLogits: true)], logits.AsSpan(0, context.VocabularySize)); // one sequence
            return logits;
        }
        Assert.Equal(Run(CpuTestBackend.Device), Run(device));
        Assert.Equal(3, device.Calls); // the one-sequence step only, once per layer
    }
}

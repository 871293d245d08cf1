using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Quantization;
using PluginEngine.Core.Sampling;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Inference;

/// <summary>
/// A KV cache of Q8_0 or Q4_0 blocks (docs/batching.md#quantized-kv-cache) end to end on the CPU backend: generation runs,
/// logits stay close to the F16 cache's, the cache takes the bytes of its type, rewinding keeps the rows it keeps, a head size
/// that is not whole blocks is refused with a reason, and a device whose Attention/Convert lack the type (as the GPU queues
/// do) leaves its layers' cache to the CPU with the CPU's results bit for bit. Batches: <see cref="BatchedContextTests"/>.
/// </summary>
public sealed class QuantizedKvCacheTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "pluginengine-kvq-" + Guid.NewGuid().ToString("N"));

    private string Model(int embedding = 256, int heads = 4, int kvHeads = 2, SyntheticWeightType type = SyntheticWeightType.Q8_0)
    {
        Directory.CreateDirectory(_folder);
        string path = Path.Combine(_folder, $"model-{embedding}-{heads}-{kvHeads}-{type}.gguf");
        if (!File.Exists(path))
            SyntheticModel.Write(new SyntheticModelSpec
            {
                // Heads of 64 (two blocks of 32); the demo model's proportions, smaller.
                Name = "kv-quantized", VocabularySize = 320, EmbeddingLength = embedding, BlockCount = 2, HeadCount = heads, KvHeadCount = kvHeads,
                FeedForwardLength = 2 * embedding, ContextLength = 64, WeightType = type, Seed = 31,
            }, path);
        return path;
    }

    private static readonly int[] Prompt = [1, 17, 250, 3, 99, 42, 7, 13, 200, 64, 5, 301, 120, 18, 77, 2, 9, 250, 31, 4];
    private static readonly int[] Decode = [11, 260, 8, 140, 33, 7, 290, 1];

    /// <summary>The prompt's logits at every position, then those of each decode step: [(Prompt + Decode) × V].</summary>
    private static float[] Logits(LoadedModel model, GgmlType kv, IBackendDevice? device = null)
    {
        using var context = model.CreateContext(new ContextOptions(ContextSize: 48, BatchSize: 32, KvCacheType: kv));
        int vocab = context.VocabularySize;
        var logits = new float[(Prompt.Length + Decode.Length) * vocab];
        context.Evaluate(Prompt, logits.AsSpan(0, Prompt.Length * vocab), allPositions: true);
        for (int i = 0; i < Decode.Length; i++) context.Evaluate([Decode[i]], logits.AsSpan((Prompt.Length + i) * vocab, vocab));
        return logits;
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void Greedy_generation_runs_and_is_deterministic(GgmlType kv)
    {
        using var model = CpuTestBackend.LoadModel(Model());
        int[] Generate()
        {
            using var context = model.CreateContext(new ContextOptions(ContextSize: 48, KvCacheType: kv));
            var result = Generator.Generate(context, model.Tokenizer, Prompt, 16, new Sampler(SamplerSettings.Greedy), cancellation: TestContext.Current.CancellationToken);
            Assert.Equal(Prompt.Length + result.GeneratedTokens - 1, context.Position); // the last sampled token is not evaluated
            return [.. result.Tokens];
        }
        var first = Generate();
        Assert.True(first.Length > Prompt.Length, "nothing was generated");
        Assert.Equal(first, Generate());
    }

    /// <remarks>
    /// Tolerances are relative to the largest |logit| of the F16 run. This is the quantization error itself, which random weights
    /// make large (measured at the worst of 28 positions: Q8_0 1.4 %, Q4_0 31 %, sixteen times Q8_0's as its step is); that the
    /// cache holds exactly its blocks is checked tightly against a reference that rounds through the same blocks
    /// (Golden/ReferenceForwardTests).
    /// </remarks>
    [Theory]
    [InlineData(GgmlType.Q8_0, 0.03)]
    [InlineData(GgmlType.Q4_0, 0.5)]
    public void Logits_stay_close_to_those_of_the_f16_cache(GgmlType kv, double tolerance)
    {
        using var model = CpuTestBackend.LoadModel(Model(type: SyntheticWeightType.F16));
        float[] f16 = Logits(model, GgmlType.F16), quantized = Logits(model, kv);
        int vocab = model.HyperParameters.VocabularySize;
        double worst = 0, moved = 0;
        for (int p = 0; p < f16.Length / vocab; p++)
        {
            var e = f16.AsSpan(p * vocab, vocab);
            var a = quantized.AsSpan(p * vocab, vocab);
            double scale = 0, error = 0;
            for (int i = 0; i < vocab; i++)
            {
                scale = Math.Max(scale, Math.Abs(e[i]));
                error = Math.Max(error, Math.Abs(e[i] - a[i]));
            }
            worst = Math.Max(worst, error / scale);
            moved = Math.Max(moved, error);
        }
        TestContext.Current.TestOutputHelper?.WriteLine($"{kv} cache: largest logit error {worst:P3} of the largest |logit|");
        Assert.True(worst <= tolerance, $"{kv} cache: logits moved by {worst:P2} of the largest |logit| (allowed {tolerance:P0})");
        Assert.True(moved > 0, $"{kv} cache: the logits are those of the F16 cache bit for bit; is the cache really {kv}?");
    }

    [Theory]
    [InlineData(GgmlType.F32)]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void The_cache_takes_the_bytes_of_its_type(GgmlType kv)
    {
        using var model = CpuTestBackend.LoadModel(Model());
        var hp = model.HyperParameters;
        const int contextSize = 64, slots = 2; // KV tensors of whole 256-byte alignment units, so the difference is exact
        long Allocated(GgmlType type)
        {
            using var context = model.CreateContext(new ContextOptions(contextSize, BatchSize: 8, KvCacheType: type), slots);
            return context.AllocatedBytes.Values.Sum();
        }
        long perPosition = KvCacheTypes.BytesPerPosition(kv, hp);
        Assert.Equal(2 * GgmlTypes.RowSize(kv, hp.KvDim), perPosition);
        Assert.Equal(kv switch { GgmlType.F32 => 2 * 4 * 128, GgmlType.F16 => 2 * 2 * 128, GgmlType.Q8_0 => 2 * 34 * 4, _ => 2 * 18 * 4 }, perPosition);
        long expectedDifference = (long)hp.BlockCount * slots * contextSize * (KvCacheTypes.BytesPerPosition(GgmlType.F32, hp) - perPosition);
        Assert.Equal(expectedDifference, Allocated(GgmlType.F32) - Allocated(kv));
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void The_split_estimate_counts_the_bytes_of_the_type(GgmlType kv)
    {
        var cpu = CpuTestBackend.Device;
        var options = new ModelLoadOptions(cpu, cpu, GpuLayers: -1, LoadOptions.Default) { Split = new LayerSplitRequest { ContextSize = 64, KvCacheType = kv } };
        using var model = LoadedModel.Load(Model(), options, SystemMappingFactory.Instance, cancellation: TestContext.Current.CancellationToken);
        var share = Assert.Single(model.Schedule.Split!.Shares);
        Assert.Equal(64L * model.HyperParameters.BlockCount * KvCacheTypes.BytesPerPosition(kv, model.HyperParameters), share.KvBytes);
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void Rewinding_keeps_the_rows_before_the_position(GgmlType kv)
    {
        using var model = CpuTestBackend.LoadModel(Model());
        int vocab = model.HyperParameters.VocabularySize;
        var options = new ContextOptions(ContextSize: 48, BatchSize: 32, KvCacheType: kv);
        var expected = new float[vocab];
        using (var fresh = model.CreateContext(options))
        {
            fresh.Evaluate(Prompt.AsSpan(0, 8), expected);
            fresh.Evaluate(Decode.AsSpan(0, 4), expected);
        }
        var actual = new float[vocab];
        using (var rewound = model.CreateContext(options))
        {
            rewound.Evaluate(Prompt, actual); // rows 8.. are overwritten after the rewind
            rewound.Rewind(8);
            rewound.Evaluate(Decode.AsSpan(0, 4), actual);
        }
        Assert.Equal(expected, actual);
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void A_head_size_that_is_not_whole_blocks_is_refused_with_the_reason(GgmlType kv)
    {
        using var model = CpuTestBackend.LoadModel(Model(embedding: 64, heads: 4, kvHeads: 2)); // heads of 16
        var e = Assert.Throws<ArgumentException>(() => model.CreateContext(new ContextOptions(ContextSize: 16, KvCacheType: kv)));
        Assert.Contains($"KV cache type {KvCacheTypes.Name(kv)}", e.Message);
        Assert.Contains("head size is 16", e.Message);
        Assert.Contains("multiple of 32", e.Message);
        using var f16 = model.CreateContext(new ContextOptions(ContextSize: 16, KvCacheType: GgmlType.F16)); // the default still works
    }

    [Fact]
    public void Other_types_are_refused_naming_the_accepted_ones()
    {
        using var model = CpuTestBackend.LoadModel(Model());
        var e = Assert.Throws<ArgumentException>(() => model.CreateContext(new ContextOptions(ContextSize: 16, KvCacheType: GgmlType.Q4_K)));
        Assert.Contains("Q4_K", e.Message);
        Assert.Contains("f16, f32, q8_0 or q4_0", e.Message);
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void Convert_stores_rows_of_blocks_that_decode_back_within_a_step(GgmlType kv)
    {
        // The CPU queue's Convert into a cache tensor at position 3 (as the context stores a token's row): the bytes go to
        // 3 × RowSize(type, kvd) and decode within one quantization step; the rows around it are not touched.
        var cpu = CpuTestBackend.Device;
        using var queue = cpu.CreateQueue()!;
        const int kvd = 128, positions = 6, at = 3, tokens = 2;
        long rowBytes = GgmlTypes.RowSize(kv, kvd);
        using var cacheBuffer = cpu.Buffers.AllocateOwned("cache", rowBytes * positions);
        using var input = cpu.Buffers.AllocateOwned("k", (long)tokens * kvd * sizeof(float));
        cacheBuffer.Memset(0, cacheBuffer.Size, 0xA5);
        var rng = new Random(5);
        float[] x = [.. Enumerable.Range(0, tokens * kvd).Select(_ => (float)(rng.NextDouble() * 4 - 2))];
        var src = new DeviceTensor(input, 0, GgmlType.F32);
        var cache = new DeviceTensor(cacheBuffer, 0, kv);
        queue.Upload(x, src);
        queue.Convert(src, cache.Skip((long)at * kvd), (long)tokens * kvd);
        queue.Synchronize();
        var bytes = new byte[cacheBuffer.Size];
        cacheBuffer.Download(0, bytes);

        var stored = bytes.AsSpan((int)(at * rowBytes), (int)(tokens * rowBytes));
        var y = new float[tokens * kvd];
        Dequantizer.Dequantize(kv, stored, y);
        for (int b = 0; b < x.Length / 32; b++)
        {
            float amax = x.Skip(32 * b).Take(32).Max(MathF.Abs);
            double step = kv == GgmlType.Q8_0 ? amax / 127.0 : amax / 8.0;
            for (int i = 32 * b; i < 32 * b + 32; i++)
                Assert.True(Math.Abs(x[i] - y[i]) <= step * 1.07, $"{kv}: element {i}: {x[i]} stored as {y[i]} (step {step})");
        }
        Assert.All(bytes.AsSpan(0, (int)(at * rowBytes)).ToArray(), v => Assert.Equal(0xA5, v));
        Assert.All(bytes.AsSpan((int)((at + tokens) * rowBytes)).ToArray(), v => Assert.Equal(0xA5, v));
    }

    /// <summary>
    /// A device that attends only over F32/F16 caches (as the CUDA, HIP and OpenCL queues do today): with a quantized cache its
    /// layers' KV slots live on the CPU, the plan and the context say so, and the logits are the CPU's bit for bit.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void A_device_without_quantized_attention_keeps_its_cache_on_the_cpu(GgmlType kv)
    {
        var cpu = CpuTestBackend.Device;
        var gpuLike = new PartialDevice(cpu, Enum.GetValues<ComputeOp>().ToHashSet(), cacheTypes: [GgmlType.F32, GgmlType.F16]);
        string path = Model();
        float[] expected;
        using (var model = CpuTestBackend.LoadModel(path))
            expected = Logits(model, kv);
        using (var model = LoadedModel.Load(path, new ModelLoadOptions(gpuLike, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance, cancellation: TestContext.Current.CancellationToken))
        {
            string plan = model.Schedule.Describe(kv);
            Assert.Contains($"op fallback: partial runs on cpu: Attention ({kv}), Convert ({kv}) (its layers' {kv} KV cache lives on the cpu)", plan);
            using (var context = model.CreateContext(new ContextOptions(ContextSize: 48, BatchSize: 32, KvCacheType: kv)))
            {
                var holder = Assert.Single(context.KvCacheLayers);
                Assert.Equal(cpu, holder.Key);
                Assert.Equal(model.HyperParameters.BlockCount, holder.Value);
            }
            Assert.Equal(expected, Logits(model, kv));
            // With an F16 cache the same device keeps its own cache.
            using var f16 = model.CreateContext(new ContextOptions(ContextSize: 48, BatchSize: 32, KvCacheType: GgmlType.F16));
            Assert.Equal(gpuLike, Assert.Single(f16.KvCacheLayers).Key);
        }
    }

    public void Dispose()
    {
        try { if (Directory.Exists(_folder)) Directory.Delete(_folder, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Loading;

/// <summary>
/// The layer split (issue 19, docs/multi-gpu.md): the planner on fake devices that report given free and total memory
/// (ranges, proportions, uneven layer counts, -ngl, --main-gpu, split mode none, a device too small, a model too large,
/// bad flags), and a model split over two devices giving the single-device logits bit for bit.
/// </summary>
public sealed class LayerSplitTests : IDisposable
{
    private readonly string _folder = Directory.CreateTempSubdirectory("pe-split-").FullName;

    public void Dispose() => Directory.Delete(_folder, true);

    /// <summary>A device that only reports memory: the planner reads nothing else.</summary>
    private sealed class MemoryDevice(string id, long free, long total = 0) : IBackendDevice, IBufferProvider
    {
        public DeviceDescription Description { get; } = new("fakegpu", $"Fake GPU {id}", DeviceKind.DiscreteGpu, id, total > 0 ? total : free, free, BackendCapabilities.None);
        public IBufferProvider Buffers => this;
        public DeviceDescription Device => Description;
        public BackendBuffer AllocateOwned(string name, long size) => throw new NotSupportedException("the planner never allocates");
        public (long Free, long Total) QueryMemory() => (free, Description.TotalMemory);
    }

    private const long GiB = 1L << 30;

    private (ModelFileLayout File, LlamaHyperParameters Hp) Model(int blocks, SyntheticWeightType type = SyntheticWeightType.Q8_0, int embedding = 64, int feedForward = 128)
    {
        string path = Path.Combine(_folder, $"m{blocks}-{type}-{embedding}.gguf");
        if (!File.Exists(path))
            SyntheticModel.Write(new SyntheticModelSpec
            {
                Name = "split", VocabularySize = 320, EmbeddingLength = embedding, BlockCount = blocks, HeadCount = 4, KvHeadCount = 2,
                FeedForwardLength = feedForward, ContextLength = 64, WeightType = type, Seed = 5,
            }, path);
        var gguf = GgufReader.Read(path);
        return (LoadedModel.ToLayout(gguf), LlamaHyperParameters.FromGguf(gguf));
    }

    private static int[] Counts(LayerSplit split, params IBackendDevice[] devices) => devices.Select(d => split.LayerDevices.Count(x => x == d)).ToArray();

    [Theory]
    [InlineData(7, "1,1", new[] { 4, 3 })]   // 3.5 rounds up: the first device takes the odd layer
    [InlineData(7, "3,1", new[] { 5, 2 })]   // 5.25 → 5
    [InlineData(8, "1,1", new[] { 4, 4 })]
    [InlineData(8, "1,3", new[] { 2, 6 })]
    [InlineData(7, "1,0", new[] { 7, 0 })]
    [InlineData(7, "1", new[] { 7, 0 })]     // fewer proportions than devices: the rest get 0, as in llama.cpp
    [InlineData(6, "1,1,1", new[] { 2, 2, 2 })]
    public void Proportions_cut_contiguous_ranges_in_device_order(int blocks, string proportions, int[] expected)
    {
        var (file, hp) = Model(blocks);
        var devices = Enumerable.Range(0, expected.Length).Select(i => (IBackendDevice)new MemoryDevice($"gpu{i}", 8 * GiB)).ToArray();
        var p = proportions.Split(',').Select(double.Parse).ToArray();
        var split = LayerSplitPlanner.Plan(file, hp, devices, cpu: null, gpuLayers: -1, new LayerSplitRequest { Proportions = p });

        Assert.Equal(expected, Counts(split, devices));
        // Contiguous: the device sequence never returns to a device it left.
        var runs = split.LayerDevices.Zip(split.LayerDevices.Skip(1)).Count(pair => pair.First != pair.Second);
        Assert.Equal(expected.Count(c => c > 0) - 1, runs);
        Assert.Same(split.LayerDevices[^1], split.OutputDevice); // no --main-gpu: the output stays with the last layer
        Assert.Equal(runs, split.BoundariesPerToken - (split.LayerDevices[0] == split.OutputDevice ? 0 : 1));
    }

    [Fact]
    public void Default_split_follows_free_memory_and_shows_bytes_and_transfers_per_device()
    {
        var (file, hp) = Model(8);
        var big = new MemoryDevice("gpu0", 6 * GiB);
        var small = new MemoryDevice("gpu1", 2 * GiB);
        var split = LayerSplitPlanner.Plan(file, hp, [big, small], cpu: null, gpuLayers: -1, new LayerSplitRequest { ContextSize = 64 });

        Assert.Equal([6, 2], Counts(split, big, small));
        Assert.Equal(2, split.Shares.Count);
        long layerBytes = file.Tensors.Where(t => LlamaTensorNames.LayerOf(t.Info.Name) == 0).Sum(t => t.Info.ByteSize);
        long outputBytes = file.Tensors.Where(t => LlamaTensorNames.LayerOf(t.Info.Name) < 0).Sum(t => t.Info.ByteSize);
        long kvPerLayer = 2 * 64 * hp.KvDim * 2; // K and V, 64 positions, F16
        Assert.Equal(6 * layerBytes, split.Shares[0].WeightBytes);
        Assert.Equal(2 * layerBytes + outputBytes, split.Shares[1].WeightBytes); // the output device also holds output and embeddings
        Assert.Equal(6 * kvPerLayer, split.Shares[0].KvBytes);
        Assert.Equal(2 * kvPerLayer, split.Shares[1].KvBytes);
        // embeddings (gpu1) → layer 0 (gpu0) → layer 6 (gpu1) → output (gpu1): two boundaries of d floats
        Assert.Equal(2, split.BoundariesPerToken);
        Assert.Equal(2L * hp.EmbeddingLength * sizeof(float), split.TransferBytesPerToken);
        string text = split.Describe();
        Assert.Contains("device fakegpu:gpu0 (Fake GPU gpu0): layers 0-5;", text);
        Assert.Contains("device fakegpu:gpu1 (Fake GPU gpu1): layers 6-7 + output + embeddings;", text);
        Assert.Contains($"activation transfers per token: 2 device boundaries × {hp.EmbeddingLength} floats = {2 * hp.EmbeddingLength * 4:N0} B", text);
    }

    [Fact]
    public void Main_gpu_holds_the_output_and_embeddings()
    {
        var (file, hp) = Model(7);
        var a = new MemoryDevice("gpu0", 8 * GiB);
        var b = new MemoryDevice("gpu1", 8 * GiB);
        var split = LayerSplitPlanner.Plan(file, hp, [a, b], cpu: null, gpuLayers: -1, new LayerSplitRequest { Proportions = [1, 1], MainDevice = 0 });
        Assert.Equal([4, 3], Counts(split, a, b));
        Assert.Same(a, split.OutputDevice);
        Assert.Equal(2, split.BoundariesPerToken); // a → b after layer 3, b → a for the output
        long outputBytes = file.Tensors.Where(t => LlamaTensorNames.LayerOf(t.Info.Name) < 0).Sum(t => t.Info.ByteSize);
        Assert.True(split.Shares[0].WeightBytes > split.Shares[1].WeightBytes + outputBytes / 2);
    }

    [Fact]
    public void Split_mode_none_uses_the_main_device_alone()
    {
        var (file, hp) = Model(7);
        var a = new MemoryDevice("gpu0", 8 * GiB);
        var b = new MemoryDevice("gpu1", 8 * GiB);
        var none = LayerSplitPlanner.Plan(file, hp, [a, b], cpu: null, gpuLayers: -1, new LayerSplitRequest { Mode = SplitMode.None, MainDevice = 1 });
        Assert.All(none.LayerDevices, d => Assert.Same(b, d));
        Assert.Same(b, none.OutputDevice);
        Assert.Equal(0, none.BoundariesPerToken);
        var first = LayerSplitPlanner.Plan(file, hp, [a, b], cpu: null, gpuLayers: -1, new LayerSplitRequest { Mode = SplitMode.None });
        Assert.All(first.LayerDevices, d => Assert.Same(a, d));
    }

    [Fact]
    public void Explicit_ngl_puts_the_rest_on_the_cpu_after_the_split()
    {
        var (file, hp) = Model(7);
        var a = new MemoryDevice("gpu0", 8 * GiB);
        var b = new MemoryDevice("gpu1", 8 * GiB);
        var cpu = new MemoryDevice("cpu", 64 * GiB);
        var split = LayerSplitPlanner.Plan(file, hp, [a, b], cpu, gpuLayers: 5, new LayerSplitRequest { Proportions = [3, 1] });
        Assert.Equal([4, 1, 2], Counts(split, a, b, cpu)); // 5 × 3/4 = 3.75 → 4
        Assert.Equal(5, split.OffloadedLayers);
        Assert.Same(cpu, split.OutputDevice);
        Assert.Equal(3, split.Shares.Count);
        Assert.Equal(3, split.BoundariesPerToken); // embeddings (cpu) → a → b → cpu (layers 5-6 and the output)
    }

    [Fact]
    public void A_device_too_small_moves_layers_on_to_the_cpu()
    {
        var (file, hp) = Model(8);
        long layer = file.Tensors.Where(t => LlamaTensorNames.LayerOf(t.Info.Name) == 0).Sum(t => t.Info.ByteSize);
        var request = new LayerSplitRequest { ContextSize = 64, BatchSize = 8 };
        long kv = 2 * 64 * hp.KvDim * 2, activations = 8L * (2 * hp.EmbeddingLength + 2 * hp.QDim + 2 * hp.KvDim + 2 * hp.FeedForwardLength) * 4;
        // Room for three layers with their KV cache and the activations, not four.
        var gpu = new MemoryDevice("gpu0", activations + 3 * (layer + kv) + layer / 2);
        var cpu = new MemoryDevice("cpu", 64 * GiB);
        var split = LayerSplitPlanner.Plan(file, hp, [gpu], cpu, gpuLayers: -1, request);
        Assert.Equal([3, 5], Counts(split, gpu, cpu));
        Assert.Equal(3, split.OffloadedLayers);
        Assert.Contains(split.Notes, n => n.Contains("3 of 8 layers offloaded (as with -ngl 3)", StringComparison.Ordinal));
        Assert.All(split.Shares, s => Assert.True(s.TotalBytes <= s.FreeBytes));

        // Two devices, the second too small for its share by free memory: layers move on until both fit.
        var other = new MemoryDevice("gpu1", activations + 1 * (layer + kv));
        var two = LayerSplitPlanner.Plan(file, hp, [gpu, other], cpu, gpuLayers: -1, request);
        Assert.All(two.Shares, s => Assert.True(s.TotalBytes <= s.FreeBytes, $"{s.Device.Description.StableId}: {s.TotalBytes} > {s.FreeBytes}"));
        Assert.True(two.OffloadedLayers is > 0 and < 8);
        Assert.Same(cpu, two.OutputDevice);

        // An explicit -ngl is obeyed, with a warning that the load may fail.
        var forced = LayerSplitPlanner.Plan(file, hp, [gpu], cpu, gpuLayers: 8, request);
        Assert.Equal(8, forced.OffloadedLayers);
        Assert.Contains(forced.Notes, n => n.Contains("the load may fail", StringComparison.Ordinal));
    }

    [Fact]
    public void A_model_that_fits_nowhere_is_refused_with_the_sizes()
    {
        var (file, hp) = Model(4);
        var gpu = new MemoryDevice("gpu0", 64L << 10);
        var cpu = new MemoryDevice("cpu", 64L << 10);
        var e = Assert.Throws<ModelDoesNotFitException>(() => LayerSplitPlanner.Plan(file, hp, [gpu], cpu, -1, new LayerSplitRequest { ContextSize = 64 }));
        Assert.StartsWith("the model does not fit: weights ", e.Message);
        Assert.Contains("KV cache ", e.Message);
        Assert.Contains("(64 positions, F16)", e.Message);
        Assert.Contains("free memory: fakegpu:gpu0 (Fake GPU gpu0) 65,536 B, fakegpu:cpu (Fake GPU cpu) 65,536 B", e.Message);

        // Without a CPU backend a device that is too small is the end of it, too.
        Assert.Throws<ModelDoesNotFitException>(() => LayerSplitPlanner.Plan(file, hp, [gpu], cpu: null, -1, new LayerSplitRequest()));
        // The CPU alone: the same refusal.
        Assert.Throws<ModelDoesNotFitException>(() => LayerSplitPlanner.Plan(file, hp, [cpu], cpu, -1, new LayerSplitRequest()));
    }

    [Theory]
    [InlineData("1,1,1", null, "--tensor-split 1,1,1: 3 proportions for 2 device(s): 0: fakegpu:gpu0 (Fake GPU gpu0), 1: fakegpu:gpu1 (Fake GPU gpu1)")]
    [InlineData("1,-1", null, "--tensor-split 1,-1: proportion 2 (-1) must be a finite number ≥ 0")]
    [InlineData("0,0", null, "--tensor-split 0,0: at least one proportion must be above 0")]
    [InlineData(null, 2, "--main-gpu 2: out of range; 2 device(s): 0: fakegpu:gpu0 (Fake GPU gpu0), 1: fakegpu:gpu1 (Fake GPU gpu1)")]
    [InlineData(null, -1, "--main-gpu -1: must be 0 or more")]
    public void Bad_split_flags_name_the_flag_and_value(string? proportions, int? main, string message)
    {
        var (file, hp) = Model(4);
        var request = new LayerSplitRequest { Proportions = proportions?.Split(',').Select(double.Parse).ToArray(), MainDevice = main };
        var e = Assert.Throws<SplitConfigException>(() => LayerSplitPlanner.Plan(file, hp, [new MemoryDevice("gpu0", GiB), new MemoryDevice("gpu1", GiB)], null, -1, request));
        Assert.Equal(message, e.Message);
    }

    // ---- a real model over two devices: the same kernels on the same values, so the same logits bit for bit ----

    /// <summary>The CPU's buffers and kernels under another identity: a second "device" as cheap as the first.</summary>
    private sealed class CpuTwin(IBackendDevice cpu, int index) : IBackendDevice
    {
        public DeviceDescription Description { get; } = cpu.Description with { Backend = "twin", StableId = $"twin:{index}", Kind = DeviceKind.Accelerator };
        public IBufferProvider Buffers => cpu.Buffers;
        public IComputeQueue CreateQueue() => new PartialQueue(this, cpu.CreateQueue()!, Enum.GetValues<ComputeOp>().ToHashSet(), brokenAdd: false);
    }

    /// <summary>A twin whose queue copies into another twin's itself (<see cref="IComputeQueue.CopyTo"/>), counting the calls.</summary>
    private sealed class CopyingTwin(IBackendDevice cpu, int index) : IBackendDevice
    {
        public DeviceDescription Description { get; } = cpu.Description with { Backend = "copier", StableId = $"copier:{index}", Kind = DeviceKind.Accelerator };
        public IBufferProvider Buffers => cpu.Buffers;
        public int CopyCalls;
        public IComputeQueue CreateQueue() => new CopyingQueue(this, cpu.CreateQueue()!);
    }

    private sealed class CopyingQueue(CopyingTwin device, IComputeQueue inner) : ForwardingQueue(device, inner), IComputeQueue
    {
        public bool CopyTo(DeviceTensor src, IComputeQueue destination, DeviceTensor dst, long bytes)
        {
            if (destination is not CopyingQueue) return false;
            Interlocked.Increment(ref device.CopyCalls);
            var values = new float[bytes / sizeof(float)];
            Inner.Download(src, values);
            destination.Upload(values, dst);
            return true;
        }
    }

    [Theory]
    [InlineData(2, true)]   // an API 1.2 plugin: its copy is used, and counted as device to device
    [InlineData(1, false)]  // a 1.1 plugin: CopyTo is never called (it did not exist), the core stages through host memory
    public void A_plugins_own_copy_is_used_from_api_1_2_and_counted_as_direct(int minor, bool direct)
    {
        var cpu = CpuTestBackend.Device;
        _ = Model(7);
        string path = Path.Combine(_folder, "m7-Q8_0-64.gguf");
        var a = new CopyingTwin(cpu, 0);
        var b = new CopyingTwin(cpu, 1);
        PluginEngine.Core.Plugins.PluginApiVersions.Record(a, minor);
        PluginEngine.Core.Plugins.PluginApiVersions.Record(b, minor);
        float[] expected = Logits(path, new ModelLoadOptions(cpu, cpu, -1, LoadOptions.Default), out _, out _);
        float[] actual = Logits(path, new ModelLoadOptions(a, cpu, -1, LoadOptions.Default) { Devices = [a, b], Split = new LayerSplitRequest { Proportions = [1, 1] } },
                                out var transfers, out _);

        Assert.Equal(expected, actual);
        Assert.Equal(6, transfers.Copies);
        Assert.Equal(direct ? 6 : 0, transfers.DirectCopies);
        Assert.Equal(direct ? 6 : 0, a.CopyCalls + b.CopyCalls);
        Assert.Equal(direct ? 3 : 0, transfers.Pairs[(a, b)].DirectCopies);
    }

    private static readonly int[] Prompt = [1, 17, 250, 3, 99, 42, 7];

    private static float[] Logits(string path, ModelLoadOptions options, out TransferCounters transfers, out string schedule)
    {
        using var model = LoadedModel.Load(path, options, SystemMappingFactory.Instance);
        using var context = model.CreateContext(new ContextOptions(ContextSize: 32, BatchSize: 4));
        int vocab = context.VocabularySize;
        var logits = new float[(Prompt.Length + 1) * vocab];
        context.Evaluate(Prompt, logits.AsSpan(0, Prompt.Length * vocab), allPositions: true); // two batches of 4 and 3
        context.Evaluate([5], logits.AsSpan(Prompt.Length * vocab));                          // one decode step
        transfers = context.Transfers;
        schedule = model.Schedule.Describe();
        return logits;
    }

    [Theory]
    [InlineData("1,1", null)]
    [InlineData("3,1", null)]
    [InlineData("1,1", 0)]
    public void Logits_of_a_model_split_over_two_devices_equal_the_single_device_run(string proportions, int? main)
    {
        var cpu = CpuTestBackend.Device;
        _ = Model(7);
        string path = Path.Combine(_folder, "m7-Q8_0-64.gguf");
        var a = new CpuTwin(cpu, 0);
        var b = new CpuTwin(cpu, 1);
        float[] expected = Logits(path, new ModelLoadOptions(cpu, cpu, -1, LoadOptions.Default), out var none, out _);
        Assert.Equal(0, none.Copies);

        var request = new LayerSplitRequest { Proportions = proportions.Split(',').Select(double.Parse).ToArray(), MainDevice = main };
        float[] actual = Logits(path, new ModelLoadOptions(a, cpu, -1, LoadOptions.Default) { Devices = [a, b], Split = request }, out var transfers, out string schedule);

        Assert.Equal(expected, actual);
        Assert.Contains("device twin:0", schedule);
        Assert.Contains("device twin:1", schedule);
        // Three forward passes (4 + 3 prompt tokens, then 1). The embeddings live with the output, so each pass crosses twice:
        // b → a → b without --main-gpu (output on the last layer's device), a → b → a with --main-gpu 0.
        const int perPass = 2;
        Assert.Equal(3 * perPass, transfers.Copies);
        Assert.Equal(3 * perPass, transfers.Pairs.Values.Sum(p => p.Copies));
        var ab = transfers.Pairs[(a, b)];
        Assert.Equal(3, ab.Copies);
        Assert.Equal((4 + 3 + 1) * 64 * sizeof(float), ab.Bytes);
        Assert.Equal(0, transfers.DirectCopies); // the twins' queues keep the contract's default: host staging
        Assert.Equal(2, transfers.Pairs.Count);
    }
}

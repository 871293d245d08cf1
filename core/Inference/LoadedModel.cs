using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Core.Inference;

/// <summary>A parsed model file that <see cref="LoadedModel.Validate"/> accepted, with what validation built.</summary>
public sealed record ValidatedModel(GgufFile File, LlamaHyperParameters HyperParameters, ITokenizer Tokenizer);

/// <summary>
/// A model ready to run: parsed file, tokenizer, schedule, weights on their devices and one queue per device.
/// Create contexts (KV caches) from it with <see cref="CreateContext"/>. Disposal waits for the queues, releases the weights
/// (device buffers, then the mapping), then the queues.
/// </summary>
public sealed class LoadedModel : IDisposable
{
    private readonly Dictionary<IBackendDevice, IComputeQueue> _queues;

    private LoadedModel(GgufFile file, LlamaHyperParameters hp, ITokenizer tokenizer, LayerSchedule schedule,
        LoadedWeights loaded, LlamaWeights weights, Dictionary<IBackendDevice, IComputeQueue> queues, TimeSpan loadTime)
    {
        File = file;
        HyperParameters = hp;
        Tokenizer = tokenizer;
        Schedule = schedule;
        Loaded = loaded;
        Weights = weights;
        _queues = queues;
        LoadTime = loadTime;
    }

    public GgufFile File { get; }
    public LlamaHyperParameters HyperParameters { get; }
    public ITokenizer Tokenizer { get; }
    public LayerSchedule Schedule { get; }
    public LoadedWeights Loaded { get; }
    public LlamaWeights Weights { get; }
    public TimeSpan LoadTime { get; }

    /// <summary>Name from general.name, or the file name.</summary>
    public string Name => OptionalText("general.name") ?? Path.GetFileNameWithoutExtension(File.Path);

    /// <summary>True for models generated with random weights (their text is noise).</summary>
    public bool HasRandomWeights => OptionalText("general.description")?.Contains("RANDOM WEIGHTS", StringComparison.Ordinal) == true;

    /// <summary>A descriptive string key, or null when absent or not a string (labels are informational: a wrong type is not worth failing a run).</summary>
    private string? OptionalText(string key) => File.TryGet(key, out var v) && v.Type == GgufValueType.String ? v.AsString() : null;

    /// <summary>Reads, plans and loads <paramref name="path"/>.</summary>
    public static LoadedModel Load(string path, ModelLoadOptions options, IMappingFactory mappings, ILogger? logger = null, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        return Load(GgufReader.Read(path), options, mappings, logger, cancellation, clock);
    }

    /// <summary>
    /// Plans and loads a model <see cref="Validate"/> accepted (a caller that checks the file first, e.g. to report a bad
    /// file before loading any plugin).
    /// </summary>
    public static LoadedModel Load(ValidatedModel model, ModelLoadOptions options, IMappingFactory mappings, ILogger? logger = null, CancellationToken cancellation = default)
        => Load(model, options, mappings, logger, cancellation, Stopwatch.StartNew());

    private static LoadedModel Load(GgufFile file, ModelLoadOptions options, IMappingFactory mappings, ILogger? logger, CancellationToken cancellation, Stopwatch clock)
        => Load(Validate(file), options, mappings, logger, cancellation, clock);

    private static LoadedModel Load(ValidatedModel model, ModelLoadOptions options, IMappingFactory mappings, ILogger? logger, CancellationToken cancellation, Stopwatch clock)
    {
        logger ??= NullLogger.Instance;
        var (file, hp, tokenizer) = model;
        string path = file.Path;
        if (options.CheckTensors) TensorValueCheck.CheckFinite(file, cancellation);

        var queues = new Dictionary<IBackendDevice, IComputeQueue>();
        LoadedWeights? loaded = null;
        try
        {
            CreateQueues(options, queues);
            // Without a CPU backend the schedule itself refuses every op the primary device lacks (MissingOpsException).
            if (options.Cpu is { } cpu) CheckWeightTypes(file, hp, queues[cpu]);
            var layout = ToLayout(file);
            var schedule = CreateSchedule(hp, layout, options, queues);
            var plan = PlacementPlanner.Plan(layout, schedule.AssignTensor, options.Load);
            logger.LogInformation("schedule:\n{Schedule}", schedule.Describe());
            logger.LogInformation("placement plan:\n{Plan}", plan.Format());
            loaded = new ModelLoader(mappings, logger).Load(plan, cancellation);
            var weights = ReadRopeFrequencyFactors(LlamaWeights.Bind(loaded, hp, path), queues, file);
            return new LoadedModel(file, hp, tokenizer, schedule, loaded, weights, queues, clock.Elapsed);
        }
        catch
        {
            foreach (var q in queues.Values) q.Dispose();
            loaded?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The schedule and placement plan loading <paramref name="file"/> with <paramref name="options"/> would use, without
    /// loading anything (for <c>inspect --plan</c>). Queues are created only to ask what each device supports. The file is
    /// validated exactly as <see cref="Load"/> validates it (metadata, tokenizer, every tensor's shape and type), so the
    /// plan never accepts a model a load rejects.
    /// </summary>
    public static (string Schedule, PlacementPlan Plan) PlanOnly(GgufFile file, ModelLoadOptions options)
    {
        var hp = Validate(file).HyperParameters;
        if (options.CheckTensors) TensorValueCheck.CheckFinite(file);
        var queues = new Dictionary<IBackendDevice, IComputeQueue>();
        try
        {
            CreateQueues(options, queues);
            if (options.Cpu is { } cpu) CheckWeightTypes(file, hp, queues[cpu]);
            var layout = ToLayout(file);
            var schedule = CreateSchedule(hp, layout, options, queues);
            var plan = PlacementPlanner.Plan(layout, schedule.AssignTensor, options.Load);
            return (schedule.Describe(), plan);
        }
        finally
        {
            foreach (var q in queues.Values) q.Dispose();
        }
    }

    /// <summary>
    /// Everything a load checks before it sizes or maps anything: hyper-parameters (counts against the tensors present,
    /// finite positive floats), the tokenizer (every key), the vocabulary against token_embd, and every tensor the graph
    /// reads (present, shape, F32 vectors). Each failure is a <see cref="ModelFormatException"/> naming the file and key or tensor.
    /// </summary>
    public static ValidatedModel Validate(GgufFile file)
    {
        var hp = LlamaHyperParameters.FromGguf(file);
        var tokenizer = TokenizerFactory.FromGguf(file);
        if (tokenizer.VocabularySize != hp.VocabularySize)
            throw new ModelFormatException(file.Path, "tokenizer.ggml.tokens", $"{tokenizer.VocabularySize} tokens, but token_embd.weight has {hp.VocabularySize} rows");
        LlamaWeights.CheckShapes(name => file.FindTensor(name)?.Info, hp, file.Path);
        return new ValidatedModel(file, hp, tokenizer);
    }

    /// <summary>
    /// Every matrix must be of a type the CPU (the device every op can fall back to) multiplies, and token_embd one it
    /// reads rows of; otherwise a kernel would meet a type it cannot decode. The error names the tensor and its role.
    /// </summary>
    private static void CheckWeightTypes(GgufFile file, LlamaHyperParameters hp, IComputeQueue cpu)
    {
        foreach (var expected in LlamaWeights.Expected(hp))
        {
            if (expected.F32Vector || file.FindTensor(expected.Name) is not { } tensor) continue;
            var type = tensor.Info.Type;
            bool embedding = expected.Name == LlamaTensorNames.TokenEmbedding;
            if (!cpu.Supports(ComputeOp.MatMul, type) && !(embedding && file.FindTensor(LlamaTensorNames.Output) is not null))
                throw new ModelFormatException(file.Path, expected.Name, $"type {type} cannot be used as a weight matrix (no matrix multiplication kernel for it)");
            if (embedding && !cpu.Supports(ComputeOp.GetRows, type))
                throw new ModelFormatException(file.Path, expected.Name, $"type {type} cannot be used as the token embedding table (no row lookup for it)");
        }
    }

    /// <summary>The split of the layers over the options' devices (docs/multi-gpu.md#how-a-split-is-planned), as a schedule.</summary>
    private static LayerSchedule CreateSchedule(LlamaHyperParameters hp, ModelFileLayout layout, ModelLoadOptions options, Dictionary<IBackendDevice, IComputeQueue> queues)
    {
        var split = LayerSplitPlanner.Plan(layout, hp, options.SplitDevices, options.Cpu, options.GpuLayers, options.Split);
        return LayerSchedule.Create(hp, split, options.Cpu, queues);
    }

    /// <summary>One queue per device the options use (the split's devices and the CPU); a device without a queue cannot run models.</summary>
    private static void CreateQueues(ModelLoadOptions options, Dictionary<IBackendDevice, IComputeQueue> queues)
    {
        foreach (var device in options.SplitDevices.Append(options.Primary).Append(options.Cpu).OfType<IBackendDevice>().Distinct())
            queues[device] = device.CreateQueue()
                ?? throw new InvalidOperationException($"backend '{device.Description.Backend}' ({device.Description.Name}) has no compute queue: it cannot run models");
    }

    /// <summary>
    /// Reads the RoPE frequency factors back to the host (every device that rotates with them but does not hold the tensor
    /// gets a copy) and checks each is positive and finite: a zero, negative or NaN factor would silently turn the angles,
    /// and then every logit, into garbage.
    /// </summary>
    private static LlamaWeights ReadRopeFrequencyFactors(LlamaWeights weights, Dictionary<IBackendDevice, IComputeQueue> queues, GgufFile file)
    {
        if (weights.RopeFrequencyFactors is not { } factors) return weights;
        long fileOffset = file.GetTensor(LlamaTensorNames.RopeFrequencies).FileOffset;
        var values = new float[factors.Tensor.ElementCount];
        queues[factors.Device].Download(new DeviceTensor(factors.Buffer, factors.BufferOffset, GgmlType.F32), values);
        for (int i = 0; i < values.Length; i++)
            if (!(values[i] > 0) || float.IsInfinity(values[i]))
                throw new ModelFormatException(file.Path, LlamaTensorNames.RopeFrequencies,
                    $"factor {i} (at byte {fileOffset + (long)i * sizeof(float)}) is {values[i]}; RoPE frequency factors must be positive and finite");
        return weights with { RopeFrequencyFactorValues = values };
    }

    /// <summary>Creates an inference context (KV cache and activations) on this model's devices.</summary>
    public LlamaContext CreateContext(ContextOptions options) => new(HyperParameters, Weights, Schedule, options);

    /// <summary>A context with <paramref name="sequences"/> KV slots of <see cref="ContextOptions.ContextSize"/> positions each (docs/batching.md).</summary>
    public LlamaContext CreateContext(ContextOptions options, int sequences) => new(HyperParameters, Weights, Schedule, options, sequences);

    /// <summary>The loader's view of a GGUF file.</summary>
    public static ModelFileLayout ToLayout(GgufFile file)
        => new(file.Path, file.FileLength, file.Tensors.Select(t => new FileTensor(t.Info, t.FileOffset)).ToArray());

    /// <summary>
    /// Teardown in the order every device needs (docs/multi-gpu.md#two-devices-on-one-gpu): wait for every queue, release
    /// the weights' buffers (each in its own device's context), then the queues (their streams). Contexts belong to the
    /// plugins and outlive the model.
    /// </summary>
    public void Dispose()
    {
        foreach (var q in _queues.Values) q.Synchronize();
        Loaded.Dispose();
        foreach (var q in _queues.Values) q.Dispose();
        _queues.Clear();
    }
}

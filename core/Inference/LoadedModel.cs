using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Core.Inference;

/// <summary>How to load a model: devices, layer split and memory mode.</summary>
/// <param name="Primary">Device for the offloaded layers (the CPU itself for CPU-only runs).</param>
/// <param name="Cpu">The CPU device (the rest of the layers and op fallbacks); null when no CPU backend is loaded (then every
/// layer runs on <paramref name="Primary"/>, which must support every op the model needs).</param>
/// <param name="GpuLayers">Layers on <paramref name="Primary"/> counted from the first; negative = all.</param>
/// <param name="Load">Memory mode and host-import switch.</param>
public sealed record ModelLoadOptions(IBackendDevice Primary, IBackendDevice? Cpu, int GpuLayers, LoadOptions Load);

/// <summary>
/// A model ready to run: parsed file, tokenizer, schedule, weights on their devices and one queue per device.
/// Create contexts (KV caches) from it with <see cref="CreateContext"/>. Disposal releases queues, then weights
/// (device buffers, then the mapping).
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
    public string Name => File.GetStringOrDefault("general.name") ?? Path.GetFileNameWithoutExtension(File.Path);

    /// <summary>True for models generated with random weights (their text is noise).</summary>
    public bool HasRandomWeights => File.GetStringOrDefault("general.description")?.Contains("RANDOM WEIGHTS", StringComparison.Ordinal) == true;

    /// <summary>Reads, plans and loads <paramref name="path"/>.</summary>
    public static LoadedModel Load(string path, ModelLoadOptions options, IMappingFactory mappings, ILogger? logger = null, CancellationToken cancellation = default)
    {
        logger ??= NullLogger.Instance;
        var clock = Stopwatch.StartNew();
        var file = GgufReader.Read(path);
        var hp = LlamaHyperParameters.FromGguf(file);
        var tokenizer = TokenizerFactory.FromGguf(file);
        if (tokenizer.VocabularySize != hp.VocabularySize)
            throw new ModelFormatException(path, "tokenizer.ggml.tokens", $"{tokenizer.VocabularySize} tokens, but token_embd.weight has {hp.VocabularySize} rows");

        var queues = new Dictionary<IBackendDevice, IComputeQueue>();
        LoadedWeights? loaded = null;
        try
        {
            CreateQueues(options, queues);
            var schedule = LayerSchedule.Create(hp, options.Primary, options.Cpu, options.GpuLayers, queues);
            var layout = ToLayout(file);
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
    /// loading anything (for <c>inspect --plan</c>). Queues are created only to ask what each device supports.
    /// </summary>
    public static (string Schedule, PlacementPlan Plan) PlanOnly(GgufFile file, ModelLoadOptions options)
    {
        var hp = LlamaHyperParameters.FromGguf(file);
        var queues = new Dictionary<IBackendDevice, IComputeQueue>();
        try
        {
            CreateQueues(options, queues);
            var schedule = LayerSchedule.Create(hp, options.Primary, options.Cpu, options.GpuLayers, queues);
            var plan = PlacementPlanner.Plan(ToLayout(file), schedule.AssignTensor, options.Load);
            return (schedule.Describe(), plan);
        }
        finally
        {
            foreach (var q in queues.Values) q.Dispose();
        }
    }

    /// <summary>One queue per device the options use (primary and CPU); a device without a queue cannot run models.</summary>
    private static void CreateQueues(ModelLoadOptions options, Dictionary<IBackendDevice, IComputeQueue> queues)
    {
        foreach (var device in new[] { options.Primary, options.Cpu }.OfType<IBackendDevice>().Distinct())
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

    /// <summary>The loader's view of a GGUF file.</summary>
    public static ModelFileLayout ToLayout(GgufFile file)
        => new(file.Path, file.FileLength, file.Tensors.Select(t => new FileTensor(t.Info, t.FileOffset)).ToArray());

    public void Dispose()
    {
        foreach (var q in _queues.Values) { q.Synchronize(); q.Dispose(); }
        _queues.Clear();
        Loaded.Dispose();
    }
}

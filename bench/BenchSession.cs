using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Memory;
using PluginEngine.Core.Models;
using PluginEngine.Core.Plugins;

namespace PluginEngine.Bench;

/// <summary>
/// What to benchmark: every list is one dimension of a cartesian product. A model is loaded once per
/// (model, backend, memory mode, host import, gpu layers, threads) and every (n_batch, n_ubatch, test) runs on it.
/// </summary>
public sealed record BenchPlan
{
    /// <summary>Models to load.</summary>
    public required IReadOnlyList<BenchModelSource> Models { get; init; }
    /// <summary>Backend names; null = the default backend of the plugin configuration.</summary>
    public required IReadOnlyList<string?> Backends { get; init; }
    /// <summary>Memory modes.</summary>
    public required IReadOnlyList<ModelMemoryMode> MemoryModes { get; init; }
    /// <summary>Host-import settings.</summary>
    public required IReadOnlyList<HostImportSetting> HostImports { get; init; }
    /// <summary>Layers on the backend (negative = all).</summary>
    public required IReadOnlyList<int> GpuLayers { get; init; }
    /// <summary>CPU threads; null = the cpu plugin's configured default.</summary>
    public required IReadOnlyList<int?> Threads { get; init; }
    /// <summary>Logical batch sizes (n_batch).</summary>
    public required IReadOnlyList<int> Batches { get; init; }
    /// <summary>Physical batch sizes (n_ubatch).</summary>
    public required IReadOnlyList<int> MicroBatches { get; init; }
    /// <summary>Tests, in order.</summary>
    public required IReadOnlyList<BenchTest> Tests { get; init; }
    /// <summary>Timed repetitions per test (after one warm-up).</summary>
    public required int Repetitions { get; init; }

    /// <summary>Layer splits over the backend's devices (<c>-sm</c>, <c>-ts</c>); default: one, the load's default split (docs/multi-gpu.md).</summary>
    public IReadOnlyList<BenchSplit> Splits { get; init; } = [BenchSplit.Default];

    /// <summary>KV cache types (<c>-ctk</c>, the <c>type_kv</c> column; docs/batching.md#quantized-kv-cache); default: F16 alone.
    /// Each runs every (n_batch, n_ubatch, test) on the same loaded model.</summary>
    public IReadOnlyList<GgmlType> CacheTypes { get; init; } = [GgmlType.F16];

    /// <summary>Model loads the plan makes.</summary>
    public int LoadCount => Models.Count * Backends.Count * MemoryModes.Count * HostImports.Count * GpuLayers.Count * Threads.Count * Splits.Count;

    /// <summary>Result rows the plan produces.</summary>
    public int RowCount => LoadCount * CacheTypes.Count * Batches.Count * MicroBatches.Count * Tests.Count;
}

/// <summary>One split configuration of a bench: mode and proportions (null: by free memory), as <c>-sm</c> and <c>-ts</c> give them.</summary>
public sealed record BenchSplit(SplitMode Mode, IReadOnlyList<double>? Proportions)
{
    /// <summary>Split mode layer, proportions by free memory: what a load does without split flags.</summary>
    public static BenchSplit Default { get; } = new(SplitMode.Layer, null);

    /// <summary>"layer", "layer 3/1", "none" (the split_mode and tensor_split columns' values joined).</summary>
    public string Label => Mode == SplitMode.None ? "none" : Proportions is null ? "layer" : $"layer {TensorSplit}";

    /// <summary>"3/1" as llama-bench writes proportions; "" by free memory.</summary>
    public string TensorSplit => Proportions is null ? "" : string.Join("/", Proportions.Select(p => p.ToString(CultureInfo.InvariantCulture)));
}

/// <summary>Where a bench reports what it is doing (a status line, or "[i/n] …" lines).</summary>
public interface IBenchProgress
{
    /// <summary>Row <paramref name="index"/> (1-based) of <paramref name="total"/> is starting, or a model is loading for it.</summary>
    void Report(int index, int total, string message);
}

/// <summary>The rows of a bench run and what they ran on.</summary>
/// <param name="Rows">One row per configuration and test, in plan order.</param>
/// <param name="Machine">The machine.</param>
/// <param name="Devices">Every device a row used (backend device and the CPU), once each.</param>
/// <param name="Warnings">Things that make the numbers unrepresentative (e.g. unoptimized Debug builds), for stderr.</param>
/// <param name="Failures">Configurations whose model could not be loaded here (e.g. no huge page pool), with the reason; their rows are missing.</param>
/// <param name="Interrupted">True when the run was cancelled: <paramref name="Rows"/> holds the tests that finished before, and the
/// test in progress is dropped.</param>
public sealed record BenchRun(IReadOnlyList<BenchResult> Rows, MachineInfo Machine, IReadOnlyList<BenchDeviceInfo> Devices,
    IReadOnlyList<string> Warnings, IReadOnlyList<string> Failures, bool Interrupted = false);

/// <summary>
/// Runs a <see cref="BenchPlan"/>: validates it against the plugins and models first (unknown backends, tests that do
/// not fit a model's context), then loads each configuration once and measures every test on it with
/// <see cref="BenchRunner"/>, filling in the memory columns from the load and the process.
/// </summary>
public sealed class BenchSession
{
    private readonly BenchPlan _plan;
    private readonly PluginConfiguration _plugins;
    private readonly IMappingFactory _mappings;
    private readonly ILoggerFactory _loggers;

    /// <summary>Creates a session; nothing is loaded until <see cref="Run"/>.</summary>
    public BenchSession(BenchPlan plan, PluginConfiguration plugins, IMappingFactory mappings, ILoggerFactory? loggers = null)
    {
        _plan = plan ?? throw new ArgumentNullException(nameof(plan));
        _plugins = plugins ?? throw new ArgumentNullException(nameof(plugins));
        _mappings = mappings ?? throw new ArgumentNullException(nameof(mappings));
        _loggers = loggers ?? NullLoggerFactory.Instance;
    }

    /// <summary>Validates, then runs every configuration and test.</summary>
    /// <param name="progress">Told when each load and test starts.</param>
    /// <param name="cancellation">Stops the run between evaluations (e.g. on Ctrl+C): the rows measured so far are returned with
    /// <see cref="BenchRun.Interrupted"/> set, instead of an exception, so an interrupted run still reports them.</param>
    /// <param name="rowMeasured">Called with each row as soon as its test finishes (before the next starts), so output can be
    /// streamed and survives a run that is cut off; may be null.</param>
    /// <exception cref="BackendNotAvailableException">A named backend is not loaded (the message lists the available ones).</exception>
    /// <exception cref="BenchParameterException">A test does not fit a model's context, or a list is empty.</exception>
    public BenchRun Run(IBenchProgress progress, CancellationToken cancellation = default, Action<BenchResult>? rowMeasured = null)
    {
        ArgumentNullException.ThrowIfNull(progress);
        var plan = _plan;
        if (plan.RowCount == 0) throw new BenchParameterException("nothing to run: a parameter list is empty");
        if (plan.Repetitions < 1) throw new BenchParameterException($"-r {plan.Repetitions}: must be at least 1");
        foreach (var t in plan.Tests) t.Validate();

        // Everything that can be wrong is checked before the first (slow) load.
        var hosts = plan.Threads.Distinct().ToDictionary(t => t ?? 0, t => PluginHost.Load(ConfigurationFor(t), _loggers));
        foreach (var host in hosts.Values)
            foreach (string? backend in plan.Backends) Resolve(host, backend);
        var headers = plan.Models.DistinctBy(m => m.Path).ToDictionary(m => m.Path, m => ReadHeader(m, plan.Tests, plan.CacheTypes));
        // The memory estimate of a load is made for the largest cache type of the plan (every one of them runs on that load).
        var largestCache = plan.CacheTypes.MaxBy(t => GgmlTypes.RowSize(t, 256));

        var machine = MachineInfo.Current();
        var rows = new List<BenchResult>(plan.RowCount);
        var devices = new List<BenchDeviceInfo>();
        var failures = new List<string>();
        var unoptimized = new SortedSet<string>(StringComparer.Ordinal);
        if (IsUnoptimized(typeof(BenchSession).Assembly)) unoptimized.Add(typeof(BenchSession).Assembly.GetName().Name!);
        int total = plan.RowCount;
        var logger = _loggers.CreateLogger("bench");
        bool interrupted = false;
        try
        {
            RunConfigurations();
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            interrupted = true; // the loaded model and context of the test in progress were disposed on the way out
        }
        var warnings = unoptimized.Count == 0 ? [] : new List<string>
        {
            $"{string.Join(", ", unoptimized)} {(unoptimized.Count == 1 ? "is a Debug build" : "are Debug builds")} (JIT optimizations off): timings are not representative; build with -c Release",
        };
        return new BenchRun(rows, machine, devices, warnings, failures, interrupted);

        void RunConfigurations()
        {
            foreach (var model in plan.Models)
            foreach (string? backendName in plan.Backends)
            foreach (var memory in plan.MemoryModes)
            foreach (var hostImport in plan.HostImports)
            foreach (int gpuLayers in plan.GpuLayers)
            foreach (int? threads in plan.Threads)
            foreach (var split in plan.Splits)
            {
                cancellation.ThrowIfCancellationRequested();
                var host = hosts[threads ?? 0];
                var backendDevices = Resolve(host, backendName).Devices;
                var primary = backendDevices[0];
                var cpu = host.GetCpu().Devices[0];
                AddDevice(devices, primary);
                AddDevice(devices, cpu);
                foreach (var device in new[] { primary, cpu })
                    if (IsUnoptimized(device.GetType().Assembly)) unoptimized.Add(device.GetType().Assembly.GetName().Name!);
                int threadCount = threads ?? ConfiguredThreads();
                string memoryName = MemoryModeName(memory);
                string backendLabel = primary.Description.Backend;
                progress.Report(rows.Count + 1, total,
                    $"loading {model.Label} on {backendLabel} ({memoryName}, {threadCount} threads{(gpuLayers >= 0 ? $", ngl {gpuLayers}" : "")})");

                var before = HugePagePool.Query();
                // Accelerators' free memory before the load, for the device_used column (the CPU's is the whole machine's).
                var freeBefore = backendDevices.Where(d => d != cpu).Distinct().ToDictionary(d => d, d => d.Buffers.QueryMemory().Free);
                var options = new ModelLoadOptions(primary, cpu, gpuLayers, new LoadOptions(memory, hostImport))
                {
                    Devices = backendDevices,
                    Split = new LayerSplitRequest
                    {
                        Mode = split.Mode, Proportions = split.Proportions, ContextSize = plan.Tests.Max(t => t.ContextTokens), BatchSize = plan.MicroBatches.Max(),
                        KvCacheType = largestCache,
                    },
                };
                LoadedModel loaded;
                try
                {
                    loaded = LoadedModel.Load(model.Path, options, _mappings, logger, cancellation);
                }
                catch (Exception e) when (e is HugePagesUnavailableException or LoadOptionsException or SplitConfigException or ModelDoesNotFitException)
                {
                    // This machine cannot hold the model this way (no huge page pool, unsupported mode): the other
                    // configurations still run, and the failure is reported with the results.
                    failures.Add($"{model.Label} on {backendLabel} ({memoryName}, {threadCount} threads): {e.Message}");
                    continue;
                }
                using var loadedModel = loaded;
                var after = HugePagePool.Query();
                var facts = headers[model.Path];

                var template = new BenchResult
                {
                    ModelFilename = model.Path, ModelLabel = model.Label, ModelType = facts.ModelType,
                    ModelSize = facts.SizeBytes, ModelNParams = facts.Parameters,
                    Backends = backendLabel, Device = primary.Description.Name, DeviceDetails = primary.Description.Details,
                    NThreads = threadCount, NGpuLayers = gpuLayers, UseMmap = memory == ModelMemoryMode.FileMapping,
                    SplitMode = split.Mode.ToString().ToLowerInvariant(), TensorSplit = split.TensorSplit,
                    SplitDevices = loaded.Schedule.LayerDevices.Append(loaded.Schedule.OutputDevice).Distinct().Count(d => d != cpu || primary == cpu),
                    MemoryMode = memoryName, HostImport = hostImport.Mode.ToString().ToLowerInvariant(),
                    LoadMs = loaded.LoadTime.TotalMilliseconds,
                    HugepagesBefore = before.IsAvailable ? before.FreePages : null,
                    HugepagesAfter = after.IsAvailable ? after.FreePages : null,
                };
                template.SetMachine(machine);
                var weightsPerDevice = SetWeightBytes(template, loaded.Loaded);
                int bos = loaded.Tokenizer.BosTokenId;

                foreach (var cacheType in plan.CacheTypes)
                foreach (int batch in plan.Batches)
                foreach (int microBatch in plan.MicroBatches)
                foreach (var test in plan.Tests)
                {
                    cancellation.ThrowIfCancellationRequested();
                    int index = rows.Count + 1;
                    string kvName = KvCacheTypes.Name(cacheType);
                    progress.Report(index, total, $"{model.Label} {backendLabel} {memoryName} t{threadCount} b{batch}/{microBatch} kv {kvName} {test.Name}");
                    var row = template.Clone();
                    row.TypeKv = kvName;
                    row.NBatch = batch;
                    row.NUbatch = microBatch;
                    row.SetTest(test);
                    row.TestTime = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
                    // llama.cpp clamps the micro-batch to the batch; the context evaluates at most this many tokens per forward pass.
                    // A concurrent-decode test: one slot per sequence, and a forward pass that holds one token of each.
                    using var context = test.IsParallel
                        ? loaded.CreateContext(new ContextOptions(test.ContextTokens, Math.Max(Math.Min(batch, microBatch), test.Sequences), cacheType), test.Sequences)
                        : loaded.CreateContext(new ContextOptions(test.ContextTokens, Math.Min(batch, microBatch), cacheType));
                    var measurement = test.IsParallel
                        ? BenchRunner.MeasureParallel(context, test, plan.Repetitions, bos, cancellation: cancellation)
                        : BenchRunner.Measure(context, test, batch, plan.Repetitions, bos, cancellation: cancellation);
                    row.SetTimings(measurement);
                    var contextBytes = context.AllocatedBytes;
                    row.ContextBytes = contextBytes.Values.Sum();
                    var deviceUsed = freeBefore.ToDictionary(kv => kv.Key, kv => Math.Max(0, kv.Value - kv.Key.Buffers.QueryMemory().Free));
                    row.DeviceMemory = DeviceMemoryOf(weightsPerDevice, contextBytes, deviceUsed);
                    row.DeviceUsedBytes = deviceUsed.Count > 0 ? deviceUsed.Values.Sum() : null;
                    row.DeviceCopies = context.Transfers.Copies / (plan.Repetitions + 1);
                    row.DeviceTransfers = string.Join(" ", context.Transfers.Pairs.Select(p =>
                        $"{LayerSplitPlanner.Id(p.Key.From)}>{LayerSplitPlanner.Id(p.Key.To)}={p.Value.Copies / (plan.Repetitions + 1)}" +
                        (p.Value.DirectCopies > 0 ? $"(direct {p.Value.DirectCopies / (plan.Repetitions + 1)})" : "")));
                    row.ProcessRssBytes = ProcessMemory.ResidentBytes();
                    rows.Add(row);
                    rowMeasured?.Invoke(row);
                }
            }
        }
    }

    /// <summary>
    /// Checks that every named backend loads from <paramref name="plugins"/> (before anything slow, such as generating a
    /// synthetic model, happens).
    /// </summary>
    /// <exception cref="BackendNotAvailableException">One does not; the message lists the available backends.</exception>
    public static void CheckBackends(PluginConfiguration plugins, IEnumerable<string?> backends, ILoggerFactory? loggers = null)
    {
        var host = PluginHost.Load(plugins, loggers ?? NullLoggerFactory.Instance);
        foreach (string? name in backends) Resolve(host, name);
    }

    /// <summary>file, hugepages, anonymous or heap: the memory_mode column.</summary>
    public static string MemoryModeName(ModelMemoryMode mode) => mode switch
    {
        ModelMemoryMode.FileMapping => "file",
        ModelMemoryMode.HugePages => "hugepages",
        ModelMemoryMode.Anonymous => "anonymous",
        ModelMemoryMode.Heap => "heap",
        _ => mode.ToString().ToLowerInvariant(),
    };

    /// <summary>
    /// Owned and imported weight bytes in total and per device, the host mapping kept, and the imported bytes that devices
    /// which do not read host memory in place registered.
    /// </summary>
    internal static Dictionary<IBackendDevice, BenchDeviceMemory> SetWeightBytes(BenchResult row, LoadedWeights weights)
    {
        // A buffer's device is the device of any tensor bound in it.
        var deviceOf = new Dictionary<BackendBuffer, IBackendDevice>(ReferenceEqualityComparer.Instance);
        foreach (var binding in weights.Tensors.Values) deviceOf.TryAdd(binding.Buffer, binding.Device);
        var perDevice = new Dictionary<IBackendDevice, BenchDeviceMemory>();
        long owned = 0, imported = 0, registered = 0;
        foreach (var buffer in weights.Buffers)
        {
            var memory = deviceOf.TryGetValue(buffer, out var device) ? DeviceMemory(perDevice, device) : null;
            if (buffer.Ownership == BufferOwnership.Owned)
            {
                owned += buffer.Size;
                if (memory is not null) memory.WeightsOwnedBytes += buffer.Size;
                continue;
            }
            imported += buffer.Size;
            if (memory is not null) memory.WeightsImportedBytes += buffer.Size;
            if (device is not null && !device.Description.Has(BackendCapabilities.HostMemoryInPlace)) registered += buffer.Size;
        }
        (row.WeightsOwnedBytes, row.WeightsImportedBytes, row.HostRegisteredBytes) = (owned, imported, registered);
        row.HostMappedBytes = weights.Mapping?.Length ?? 0;
        return perDevice;
    }

    /// <summary>
    /// One row's per-device memory: the model's weights per device, what the test's context allocated there and how far each
    /// accelerator's free memory fell since before the load (<paramref name="deviceUsed"/>; absent: not measured).
    /// </summary>
    internal static BenchDeviceMemory[] DeviceMemoryOf(Dictionary<IBackendDevice, BenchDeviceMemory> weights, IReadOnlyDictionary<IBackendDevice, long> context,
                                                       IReadOnlyDictionary<IBackendDevice, long>? deviceUsed = null)
    {
        var perDevice = weights.ToDictionary(kv => kv.Key, kv => new BenchDeviceMemory
        {
            Device = kv.Value.Device, WeightsOwnedBytes = kv.Value.WeightsOwnedBytes, WeightsImportedBytes = kv.Value.WeightsImportedBytes,
        });
        foreach (var (device, bytes) in context) DeviceMemory(perDevice, device).ContextBytes += bytes;
        if (deviceUsed is not null)
            foreach (var (device, bytes) in deviceUsed) DeviceMemory(perDevice, device).DeviceUsedBytes = bytes;
        return perDevice.Values.ToArray();
    }

    private static BenchDeviceMemory DeviceMemory(Dictionary<IBackendDevice, BenchDeviceMemory> perDevice, IBackendDevice device)
    {
        if (!perDevice.TryGetValue(device, out var memory))
            perDevice[device] = memory = new BenchDeviceMemory { Device = device.Description.Backend };
        return memory;
    }

    private PluginConfiguration ConfigurationFor(int? threads)
        => threads is { } t ? _plugins.WithCpuThreads(t) : _plugins;

    /// <summary>The cpu plugin's thread count when -t is not given: its plugins.json option, 0 or absent meaning every core.</summary>
    private int ConfiguredThreads()
    {
        int configured = _plugins.ConfiguredCpuThreads();
        return configured > 0 ? configured : Environment.ProcessorCount;
    }

    /// <summary>True for assemblies compiled without optimizations (Debug configuration).</summary>
    private static bool IsUnoptimized(System.Reflection.Assembly assembly)
        => assembly.GetCustomAttributes(typeof(System.Diagnostics.DebuggableAttribute), false)
            .OfType<System.Diagnostics.DebuggableAttribute>().Any(d => d.IsJITOptimizerDisabled);

    private static LoadedBackend Resolve(PluginHost host, string? name) => name is null ? host.SelectDefault() : host.GetBackend(name);

    private static void AddDevice(List<BenchDeviceInfo> devices, IBackendDevice device)
    {
        var info = new BenchDeviceInfo(device.Description.Backend, device.Description.Name, device.Description.Details);
        if (!devices.Contains(info)) devices.Add(info);
    }

    /// <summary>Reads a model's header, checks every test fits its context and every KV cache type its shape, and returns the model columns.</summary>
    private static BenchModelFacts ReadHeader(BenchModelSource model, IReadOnlyList<BenchTest> tests, IReadOnlyList<GgmlType> cacheTypes)
    {
        var file = GgufReader.Read(model.Path);
        var hp = LlamaHyperParameters.FromGguf(file);
        foreach (var type in cacheTypes)
            if (KvCacheTypes.Problem(type, hp) is { } problem) throw new BenchParameterException($"-ctk {KvCacheTypes.Name(type)} on {model.Label}: {problem}");
        foreach (var test in tests)
        {
            if (test.ContextTokens > hp.ContextLength)
                throw new BenchParameterException(
                    $"{test.Name} needs {test.ContextTokens} context positions (depth + prompt + generation), but {model.Label} has a context length of {hp.ContextLength}");
        }
        return BenchModelFacts.From(file);
    }
}

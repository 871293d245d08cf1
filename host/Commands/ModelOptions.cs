using System.CommandLine;
using Microsoft.Extensions.Logging;
using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Plugins;

namespace PluginEngine.Host.Commands;

/// <summary>
/// Options shared by every command that loads a model (run, logits, inspect --plan, bench): the model, the backend,
/// layer offload and memory mode. Declared once; each command adds the ones it needs with <see cref="AddTo"/>.
/// </summary>
public sealed class ModelOptions
{
    public Option<string?> Model { get; } = new("--model", "-m") { Description = "GGUF model file (default: the demo model, generated on first use, RANDOM weights)", HelpName = "FILE" };
    public Option<string?> Backend { get; } = new("--backend") { Description = "Backend to run on (default: the first available in plugins.json's preference order)", HelpName = "NAME" };
    public Option<int> GpuLayers { get; } = new("--gpu-layers", "-ngl") { Description = "Layers on the selected backend, counted from the first; the rest run on the CPU (default: all)", DefaultValueFactory = _ => -1 };
    public Option<int> Threads { get; } = new("--threads", "-t") { Description = "CPU threads (default: plugins.json's cpu option, else all cores)" };
    public Option<bool> HugePages { get; } = new("--hugepages") { Description = "Hold the model in 2 MiB huge pages (Linux; needs a reserved pool)" };
    public Option<bool> NoMmap { get; } = new("--no-mmap") { Description = "Read the model into heap memory instead of mapping the file" };
    public Option<string?> HostImport { get; } = new("--host-import", "--gpu-host-import") { Description = $"Host import (devices use the mapped model pages in place): auto (default), on, off; overrides {HostImportSetting.EnvironmentVariable}", HelpName = "auto|on|off" };
    public Option<bool> NoHostImport { get; } = new("--no-host-import", "--no-gpu-host-import") { Description = "Same as --host-import off" };
    public Option<bool> CheckTensors { get; } = new("--check-tensors") { Description = "Decode every weight at load and reject NaN/Inf, naming the tensor (reads the whole file once)" };
    public Option<string?> SplitMode { get; } = new("--split-mode", "-sm") { Description = "How the offloaded layers use several devices: layer (default: contiguous layer ranges, one per device) or none (the main device only)", HelpName = "none|layer" };
    public Option<string?> TensorSplit { get; } = new("--tensor-split", "-ts") { Description = "Share of the offloaded layers per device, e.g. 3,1 (default: by free memory)", HelpName = "P[,P…]" };
    public Option<int?> MainGpu { get; } = new("--main-gpu", "-mg") { Description = "Device index for the output layer and embeddings, and the device of --split-mode none (default: 0; the output stays with the last layer)", HelpName = "I" };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Model, Backend, GpuLayers, Threads, HugePages, NoMmap, HostImport, NoHostImport, CheckTensors, SplitMode, TensorSplit, MainGpu }) command.Options.Add(o);
    }

    /// <summary>The split flags (docs/multi-gpu.md#flags), checked alone; the context fields size the memory estimate.</summary>
    public LayerSplitRequest ResolveSplit(ParseResult parse, int contextSize = 0, int batchSize = 512, GgmlType kvCacheType = GgmlType.F16)
    {
        var mode = parse.GetValue(SplitMode) switch
        {
            null or "layer" => Core.Loading.SplitMode.Layer,
            "none" => Core.Loading.SplitMode.None,
            var other => throw new UserErrorException($"--split-mode {other}: expected none or layer", isUsage: true),
        };
        double[]? proportions = null;
        if (parse.GetValue(TensorSplit) is { } text)
        {
            var items = text.Split(',');
            proportions = new double[items.Length];
            for (int i = 0; i < items.Length; i++)
                if (!double.TryParse(items[i].Trim(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out proportions[i]))
                    throw new UserErrorException($"--tensor-split {text}: '{items[i]}' is not a number (write proportions separated by commas, e.g. 3,1)", isUsage: true);
        }
        var request = new LayerSplitRequest
        {
            Mode = mode, Proportions = proportions, MainDevice = parse.GetValue(MainGpu),
            ContextSize = contextSize, BatchSize = batchSize, KvCacheType = kvCacheType,
        };
        try { request.Validate(); }
        catch (SplitConfigException e) { throw new UserErrorException(e.Message, isUsage: true); }
        return request;
    }

    /// <summary>The model path: the given file (must exist), or the demo model.</summary>
    public string ResolveModelPath(ParseResult parse, CliContext context)
    {
        if (parse.GetValue(Model) is { } path)
        {
            ModelFileCheck.RequireFile(path);
            return path;
        }
        return DemoModel.EnsureExists(m => context.Error.WriteLine(m));
    }

    /// <summary>The host-import switch from the flags and the environment (the flag wins; conflicts are reported).</summary>
    public HostImportSetting ResolveHostImport(ParseResult parse)
    {
        string? flag = parse.GetValue(HostImport);
        bool off = parse.GetValue(NoHostImport);
        if (flag is not null && off) throw new UserErrorException("--host-import and --no-host-import contradict each other; give one");
        try
        {
            HostImportMode? mode = off ? HostImportMode.Off : flag is null ? null : HostImportSetting.Parse(flag, "--host-import");
            return HostImportSetting.Resolve(mode);
        }
        catch (ArgumentException e) { throw new UserErrorException(e.Message); }
    }

    /// <summary>Memory mode and host import from the switches; impossible combinations are explained.</summary>
    public LoadOptions ResolveLoadOptions(ParseResult parse)
    {
        try { return LoadOptions.FromSwitches(!parse.GetValue(NoMmap), parse.GetValue(HugePages), ResolveHostImport(parse), OperatingSystem.IsLinux()); }
        catch (LoadOptionsException e) { throw new UserErrorException(e.Message); }
    }

    /// <summary>
    /// Loads the plugins (with <c>-t</c> applied to the cpu plugin) and picks the devices: every device of the selected
    /// backend(s) (<c>--backend cuda</c>, or several: <c>--backend cuda,opencl</c> or <c>opencl,cpu</c>), in order, as placement targets
    /// (docs/multi-gpu.md#flags); the primary is the first. The CPU device is null when no cpu backend loaded: a backend
    /// that supports every op the model needs runs without it, any other is refused at load with the list of missing ops.
    /// </summary>
    public (PluginHost Host, IBackendDevice Primary, IBackendDevice? Cpu) ResolveDevices(ParseResult parse, CliContext context)
    {
        var (host, devices, cpu) = ResolveSplitDevices(parse, context);
        return (host, devices[0], cpu);
    }

    /// <summary>As <see cref="ResolveDevices"/>, with every placement target.</summary>
    public (PluginHost Host, IReadOnlyList<IBackendDevice> Devices, IBackendDevice? Cpu) ResolveSplitDevices(ParseResult parse, CliContext context)
    {
        var config = context.LocatePluginConfiguration();
        if (parse.GetResult(Threads) is not null)
        {
            int threads = parse.GetValue(Threads);
            if (threads <= 0) throw new UserErrorException($"--threads {threads}: must be at least 1");
            config = config.WithCpuThreads(threads);
        }
        var host = PluginHost.Load(config, context.Loggers);
        var names = parse.GetValue(Backend) is { } given ? given.Split(',', StringSplitOptions.TrimEntries) : null;
        if (names is not null && (names.Any(n => n.Length == 0) || names.Distinct().Count() != names.Length))
            throw new UserErrorException($"--backend {parse.GetValue(Backend)}: name each backend once, separated by commas", isUsage: true);
        var backends = names is null ? [host.SelectDefault()] : names.Select(host.GetBackend).ToList();
        var cpu = host.Backends.TryGetValue(PluginConfiguration.CpuBackend, out var cpuBackend) ? cpuBackend : null;
        PluginDiagnostics.Report(host, context.Error, used: cpu is null ? backends : [.. backends, cpu]);
        // Every device of every backend named, in order: the CPU too when it is named (--backend opencl,cpu splits the layers
        // between them by --tensor-split); not named, it holds the layers beyond -ngl and the op fallbacks.
        var devices = backends.SelectMany(b => b.Devices).ToList();
        return (host, devices, cpu?.Devices[0]);
    }

    /// <summary>The load options of a model: devices, -ngl, the split, memory mode.</summary>
    public ModelLoadOptions ResolveLoadOptions(ParseResult parse, CliContext context, LayerSplitRequest split)
    {
        var loadOptions = ResolveLoadOptions(parse);
        var (_, devices, cpu) = ResolveSplitDevices(parse, context);
        var primary = split.MainDevice is int main && main < devices.Count ? devices[main] : devices[0];
        return new ModelLoadOptions(primary, cpu, parse.GetValue(GpuLayers), loadOptions) { CheckTensors = parse.GetValue(CheckTensors), Devices = devices, Split = split };
    }

    /// <summary>Loads the model onto the devices the options select; <paramref name="split"/> carries the context the memory estimate is for.</summary>
    public LoadedModel LoadModel(ParseResult parse, CliContext context, out string path, LayerSplitRequest? split = null)
    {
        path = ResolveModelPath(parse, context);
        split ??= ResolveSplit(parse);
        // A file that is not a usable model is reported before any plugin (and GPU runtime) is loaded.
        var validated = LoadedModel.Validate(Core.Gguf.GgufReader.Read(path));
        // So is a KV cache type the model's shape cannot hold (a quantized cache needs heads of whole 32-element blocks).
        if (KvCacheTypes.Problem(split.KvCacheType, validated.HyperParameters) is { } kvProblem) throw new UserErrorException(kvProblem, isUsage: true);
        var options = ResolveLoadOptions(parse, context, split);
        LoadedModel model;
        try { model = LoadedModel.Load(validated, options, SystemMappingFactory.Instance, context.Loggers.CreateLogger("loader")); }
        catch (SplitConfigException e) { throw new UserErrorException(e.Message, isUsage: true); }
        catch (ModelDoesNotFitException e) { throw new UserErrorException(e.Message); }
        if (context.Verbose)
        {
            context.Error.WriteLine(model.Schedule.Describe(split.KvCacheType));
            context.Error.WriteLine(model.Loaded.Plan.Format());
        }
        return model;
    }
}

/// <summary>
/// A mistake in what the user asked for: printed as one line, exit code 2. <see cref="IsUsage"/>: the mistake is in a
/// flag's value, so the command's --help is named after the message.
/// </summary>
public sealed class UserErrorException(string message, bool isUsage = false) : Exception(message)
{
    /// <summary>True when a flag's value is wrong (the CLI adds "Run 'pluginengine CMD --help' for usage.").</summary>
    public bool IsUsage { get; } = isUsage;
}

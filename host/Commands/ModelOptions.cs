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

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Model, Backend, GpuLayers, Threads, HugePages, NoMmap, HostImport, NoHostImport, CheckTensors }) command.Options.Add(o);
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
    /// Loads the plugins (with <c>-t</c> applied to the cpu plugin) and picks the primary and CPU devices. The CPU device is
    /// null when no cpu backend loaded: a backend that supports every op the model needs runs without it, any other is
    /// refused at load with the list of missing ops.
    /// </summary>
    public (PluginHost Host, IBackendDevice Primary, IBackendDevice? Cpu) ResolveDevices(ParseResult parse, CliContext context)
    {
        var config = context.LocatePluginConfiguration();
        if (parse.GetResult(Threads) is not null)
        {
            int threads = parse.GetValue(Threads);
            if (threads <= 0) throw new UserErrorException($"--threads {threads}: must be at least 1");
            config = config.WithCpuThreads(threads);
        }
        var host = PluginHost.Load(config, context.Loggers);
        var backend = parse.GetValue(Backend) is { } name ? host.GetBackend(name) : host.SelectDefault();
        var cpu = host.Backends.TryGetValue(PluginConfiguration.CpuBackend, out var cpuBackend) ? cpuBackend : null;
        PluginDiagnostics.Report(host, context.Error, used: cpu is null ? [backend] : [backend, cpu]);
        return (host, backend.Devices[0], cpu?.Devices[0]);
    }

    /// <summary>Loads the model onto the devices the options select.</summary>
    public LoadedModel LoadModel(ParseResult parse, CliContext context, out string path)
    {
        path = ResolveModelPath(parse, context);
        var loadOptions = ResolveLoadOptions(parse);
        // A file that is not a usable model is reported before any plugin (and GPU runtime) is loaded.
        var validated = LoadedModel.Validate(Core.Gguf.GgufReader.Read(path));
        var (_, primary, cpu) = ResolveDevices(parse, context);
        var options = new ModelLoadOptions(primary, cpu, parse.GetValue(GpuLayers), loadOptions) { CheckTensors = parse.GetValue(CheckTensors) };
        var model = LoadedModel.Load(validated, options, SystemMappingFactory.Instance, context.Loggers.CreateLogger("loader"));
        if (context.Verbose)
        {
            context.Error.WriteLine(model.Schedule.Describe());
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

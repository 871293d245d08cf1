using Microsoft.Extensions.Logging;
using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Plugins;

namespace PluginEngine.Extensions.AI;

/// <summary>
/// Loads the model the options name the way the command line's model flags do (host/Commands/ModelOptions.cs): the
/// plugins.json search, <c>-t</c> as the cpu plugin's threads option, the named or default backend, the memory mode
/// and host-import switch, the demo model when no file is given.
/// </summary>
internal static class PluginEngineModelLoader
{
    public static LoadedModel Load(PluginEngineChatClientOptions options, ILoggerFactory loggers, out PluginHost host)
    {
        string path;
        if (options.ModelPath is { } given)
        {
            if (!File.Exists(given)) throw new FileNotFoundException($"model file not found: {given}", given);
            path = given;
        }
        else path = DemoModel.EnsureExists(m => loggers.CreateLogger<PluginEngineChatClient>().LogInformation("{Message}", m));

        // A file that is not a usable model is reported before any plugin (and GPU runtime) is loaded, as the CLI does.
        var validated = LoadedModel.Validate(Core.Gguf.GgufReader.Read(path));
        var kvType = options.ResolveKvCacheType();
        if (KvCacheTypes.Problem(kvType, validated.HyperParameters) is { } kvProblem) throw new ArgumentException(kvProblem, nameof(options.KvCacheType));
        var config = PluginConfigLocator.Locate(options.PluginsPath);
        if (options.Threads is { } threads)
        {
            if (threads <= 0) throw new ArgumentOutOfRangeException(nameof(options), threads, "Threads must be at least 1");
            config = config.WithCpuThreads(threads);
        }
        host = PluginHost.Load(config, loggers);
        var backend = options.Backend is { } name ? host.GetBackend(name) : host.SelectDefault();
        IBackendDevice primary = backend.Devices[0], cpu = host.GetCpu().Devices[0];

        var load = LoadOptions.FromSwitches(!options.NoMmap, options.HugePages, HostImportSetting.Resolve(options.HostImport), OperatingSystem.IsLinux());
        var loadOptions = new ModelLoadOptions(primary, cpu, options.GpuLayers, load)
        {
            CheckTensors = options.CheckTensors,
            Split = new LayerSplitRequest { ContextSize = options.ContextSize ?? 0, BatchSize = Math.Max(1, options.BatchSize), KvCacheType = kvType },
        };
        return LoadedModel.Load(validated, loadOptions, SystemMappingFactory.Instance, loggers.CreateLogger("loader"));
    }
}

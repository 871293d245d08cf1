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

        var config = PluginConfigLocator.Locate(options.PluginsPath);
        if (options.Threads is { } threads)
        {
            if (threads <= 0) throw new ArgumentOutOfRangeException(nameof(options), threads, "Threads must be at least 1");
            config = config.WithOption("cpu", "threads", threads.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        host = PluginHost.Load(config, loggers);
        var backend = options.Backend is { } name ? host.GetBackend(name) : host.SelectDefault();
        IBackendDevice primary = backend.Devices[0], cpu = host.GetBackend("cpu").Devices[0];

        var hostImport = HostImportSetting.Resolve(options.HostImport, Environment.GetEnvironmentVariable(HostImportSetting.EnvironmentVariable));
        var load = LoadOptions.FromSwitches(!options.NoMmap, options.HugePages, hostImport, OperatingSystem.IsLinux());
        return LoadedModel.Load(path, new ModelLoadOptions(primary, cpu, options.GpuLayers, load), SystemMappingFactory.Instance, loggers.CreateLogger("loader"));
    }
}

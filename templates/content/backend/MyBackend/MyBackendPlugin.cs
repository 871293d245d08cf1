using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace MyBackend;

/// <summary>The plugin's entry type: the host creates it, checks the API version, probes it and asks for its devices.</summary>
public sealed class MyBackendPlugin : IBackendPlugin
{
    /// <summary>What users pass to <c>--backend</c>.</summary>
    public string Name => "mybackend";

    // The contracts this plugin was compiled against (both constants are inlined at compile time).
    public int ApiVersion => PluginApi.Major;
    public int ApiMinorVersion => PluginApi.Minor;

    /// <summary>Plain C# runs everywhere; a real backend looks for its runtime and devices here and says why not when absent.</summary>
    public ProbeResult Probe(PluginContext context) => ProbeResult.Available(5, "plain C# on the host processor");

    public void ConfigureServices(IServiceCollection services, PluginContext context)
        => services.AddSingleton<IBackendDevice>(_ => new MyBackendDevice(context.Options.GetInt32("device", 0, 0, 0)));
}

using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace PluginEngine.TestPlugins;

/// <summary>Reports API 0.0: a plugin API major older than the host's. The host must refuse it, naming both versions, before probing.</summary>
public sealed class OlderMajorPlugin : IBackendPlugin
{
    public string Name => "fake";

    public int ApiVersion => 0;

    public int ApiMinorVersion => 0;

    public ProbeResult Probe(PluginContext context) => throw new InvalidOperationException("the host must not probe a plugin it refused");

    public void ConfigureServices(IServiceCollection services, PluginContext context) => throw new InvalidOperationException("must not be configured");
}

using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace PluginEngine.TestPlugins;

/// <summary>Claims a plugin API version the host does not speak; the host must reject it before probing.</summary>
public sealed class WrongApiVersionPlugin : IBackendPlugin
{
    public string Name => "fake";

    public int ApiVersion => 999;

    public ProbeResult Probe(PluginContext context) => throw new InvalidOperationException("the host must not probe a plugin with the wrong API version");

    public void ConfigureServices(IServiceCollection services, PluginContext context) => throw new InvalidOperationException("must not be configured");
}

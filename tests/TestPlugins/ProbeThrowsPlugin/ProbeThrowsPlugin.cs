using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace PluginEngine.TestPlugins;

/// <summary>Breaks the probe contract by throwing; the host must turn that into a rejection, not a crash.</summary>
public sealed class ProbeThrowsPlugin : IBackendPlugin
{
    public string Name => "fake";

    public int ApiVersion => PluginApi.Version;

    public ProbeResult Probe(PluginContext context) => throw new InvalidOperationException("fake driver exploded during probe");

    public void ConfigureServices(IServiceCollection services, PluginContext context) => throw new InvalidOperationException("must not be configured after a failed probe");
}

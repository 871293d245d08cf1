using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace PluginEngine.TestPlugins;

/// <summary>Reports API 1.99: the host's major but a newer minor (members the host does not have). The host must refuse it, naming both versions, before probing.</summary>
public sealed class NewerMinorPlugin : IBackendPlugin
{
    public string Name => "fake";

    public int ApiVersion => 1;

    public int ApiMinorVersion => 99;

    public ProbeResult Probe(PluginContext context) => throw new InvalidOperationException("the host must not probe a plugin it refused");

    public void ConfigureServices(IServiceCollection services, PluginContext context) => throw new InvalidOperationException("must not be configured");
}

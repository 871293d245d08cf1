using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace PluginEngine.TestPlugins;

/// <summary>A backend whose hardware is absent: the probe scores 0 with a reason, as a GPU plugin would without its driver.</summary>
public sealed class ProbeSaysNoPlugin : IBackendPlugin
{
    public string Name => "fake";

    public int ApiVersion => PluginApi.Version;

    public ProbeResult Probe(PluginContext context) => ProbeResult.Unavailable("fake device not present");

    public void ConfigureServices(IServiceCollection services, PluginContext context) => throw new InvalidOperationException("must not be configured after a failed probe");
}

using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu;

/// <summary>Entry type of the CPU backend plugin (the embedded default and the reference backend).</summary>
public sealed class CpuPlugin : IBackendPlugin
{
    public string Name => "cpu";

    public int ApiVersion => PluginApi.Major;
    public int ApiMinorVersion => PluginApi.Minor;

    public ProbeResult Probe(PluginContext context)
    {
        int threads = CpuDevice.ResolveThreads(context.Options);
        return ProbeResult.Available(10, $"{CpuDevice.DescribeIsa()}, {threads} threads");
    }

    public void ConfigureServices(IServiceCollection services, PluginContext context)
        => services.AddSingleton<IBackendDevice>(_ => new CpuDevice(context.Options));
}

using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;

namespace PluginEngine.Backends.Gpu;

/// <summary>
/// What the CUDA and HIP entry types share (docs/hip.md#one-gpu-code-base): read the <c>device</c> ordinal and the kernel
/// options, open the vendor's runtime in the probe (a missing library, device or compile is a rejection reason, never an
/// exception), and register one <see cref="GpuDevice"/>. A vendor plugin names itself and binds its runtime.
/// </summary>
public abstract class GpuPlugin : IBackendPlugin
{
    private GpuRuntime? _runtime;
    private string _details = "";

    public abstract string Name { get; }

    public int ApiVersion => PluginApi.Major;
    public int ApiMinorVersion => PluginApi.Minor;

    /// <summary>The vendor's kernel options (plugins.json options, environment overrides).</summary>
    private protected abstract GpuKernelOptions ReadKernelOptions(PluginOptions options);

    /// <summary>Opens device <paramref name="ordinal"/> through the vendor's runtime, or null with the reason.</summary>
    private protected abstract GpuRuntime? TryCreateRuntime(int ordinal, string pluginDirectory, string? cacheDirectory, GpuKernelOptions kernels,
                                                            out string reason, out string details);

    public ProbeResult Probe(PluginContext context)
    {
        int ordinal;
        GpuKernelOptions kernels;
        try
        {
            ordinal = context.Options.GetInt32("device", 0, 0, 1023);
            kernels = ReadKernelOptions(context.Options);
        }
        catch (PluginOptionException e) { return ProbeResult.Unavailable(e.Message); }
        _runtime = TryCreateRuntime(ordinal, context.PluginDirectory, context.Options.GetString("kernelCache"), kernels, out string reason, out _details);
        return _runtime is null ? ProbeResult.Unavailable(reason) : ProbeResult.Available(100, reason);
    }

    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        var runtime = _runtime ?? throw new InvalidOperationException($"{Name}: ConfigureServices called without a successful probe");
        string details = _details;
        services.AddSingleton<IBackendDevice>(_ => new GpuDevice(runtime, details));
    }
}

using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Kernels;

namespace PluginEngine.Backends.Hip;

/// <summary>
/// Entry type of the HIP backend plugin (AMD GPUs and APUs): a thin binding of the HIP runtime and hiprtc under the shared
/// GPU code base (backends/Gpu), running the same kernels as the CUDA plugin, compiled by hiprtc for the device's arch.
/// The probe resolves libamdhip64 and hiprtc itself (a missing library or a machine without an AMD GPU is a rejection
/// with the runtime's own error), opens the device named by <c>device</c> (default 0) and loads the kernels.
/// Options: <c>device</c>, <c>kernelCache</c>, <c>matvec</c> (int8 | f32), <c>fusion</c>, <c>defines</c>,
/// <c>attention_chunk</c> and <c>readonly_register</c> (off | on): see <see cref="GpuKernelOptions.FromHip"/> and docs/hip.md.
/// </summary>
public sealed class HipPlugin : IBackendPlugin
{
    private GpuRuntime? _runtime;
    private string _details = "";

    public string Name => "hip";

    public int ApiVersion => PluginApi.Major;
    public int ApiMinorVersion => PluginApi.Minor;

    public ProbeResult Probe(PluginContext context)
    {
        int ordinal;
        GpuKernelOptions kernels;
        try
        {
            ordinal = context.Options.GetInt32("device", 0, 0, 1023);
            kernels = GpuKernelOptions.FromHip(context.Options, Environment.GetEnvironmentVariable);
        }
        catch (PluginOptionException e) { return ProbeResult.Unavailable(e.Message); }
        _runtime = HipRuntime.TryCreate(ordinal, context.PluginDirectory, context.Options.GetString("kernelCache"), kernels, out string reason, out _details);
        return _runtime is null ? ProbeResult.Unavailable(reason) : ProbeResult.Available(100, reason);
    }

    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        var runtime = _runtime ?? throw new InvalidOperationException("hip: ConfigureServices called without a successful probe");
        string details = _details;
        services.AddSingleton<IBackendDevice>(_ => new GpuDevice(runtime, details));
    }
}

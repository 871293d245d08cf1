using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Kernels;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// Entry type of the CUDA backend plugin: a thin binding of the CUDA driver API, NVRTC and cuBLAS under the shared GPU
/// code base (backends/Gpu). The probe resolves libcuda and NVRTC itself (a missing library is a rejection reason, never
/// an exception), opens the device named by the <c>device</c> option (default 0) and loads the kernels, compiling them
/// with NVRTC on first use and caching the image on disk.
/// Options: <c>device</c> (index), <c>kernelCache</c> (folder for compiled kernels), <c>matvec</c> (int8 | f32),
/// <c>gemm</c> (cublas | kernels) and the rest of <see cref="GpuKernelOptions.FromCuda"/>.
/// </summary>
public sealed class CudaPlugin : IBackendPlugin
{
    private GpuRuntime? _runtime;
    private string _details = "";

    public string Name => "cuda";

    public int ApiVersion => PluginApi.Major;
    public int ApiMinorVersion => PluginApi.Minor;

    public ProbeResult Probe(PluginContext context)
    {
        int ordinal;
        GpuKernelOptions kernels;
        try
        {
            ordinal = context.Options.GetInt32("device", 0, 0, 1023);
            kernels = GpuKernelOptions.FromCuda(context.Options, Environment.GetEnvironmentVariable);
        }
        catch (PluginOptionException e) { return ProbeResult.Unavailable(e.Message); }
        _runtime = CudaRuntime.TryCreate(ordinal, context.PluginDirectory, context.Options.GetString("kernelCache"), kernels, out string reason, out _details);
        return _runtime is null ? ProbeResult.Unavailable(reason) : ProbeResult.Available(100, reason);
    }

    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        var runtime = _runtime ?? throw new InvalidOperationException("cuda: ConfigureServices called without a successful probe");
        string details = _details;
        services.AddSingleton<IBackendDevice>(_ => new GpuDevice(runtime, details));
    }
}

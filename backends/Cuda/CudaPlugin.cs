using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Cuda.Kernels;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// Entry type of the CUDA backend plugin. The probe resolves libcuda and NVRTC itself (a missing library is a
/// rejection reason, never an exception), opens the device named by the <c>device</c> option (default 0) and
/// loads the kernels, compiling them with NVRTC on first use and caching the image on disk.
/// Options: <c>device</c> (index), <c>kernelCache</c> (folder for compiled kernels), <c>matvec</c> (int8 | f32) and
/// <c>gemm</c> (cublas | kernels): see <see cref="CudaKernelOptions"/>.
/// </summary>
public sealed class CudaPlugin : IBackendPlugin
{
    private CudaRuntime? _runtime;

    public string Name => "cuda";

    public int ApiVersion => PluginApi.Major;
    public int ApiMinorVersion => PluginApi.Minor;

    public ProbeResult Probe(PluginContext context)
    {
        int ordinal;
        CudaKernelOptions kernels;
        try
        {
            ordinal = context.Options.GetInt32("device", 0, 0, 1023);
            kernels = CudaKernelOptions.From(context.Options, Environment.GetEnvironmentVariable);
        }
        catch (PluginOptionException e) { return ProbeResult.Unavailable(e.Message); }
        _runtime = CudaRuntime.TryCreate(ordinal, context.PluginDirectory, context.Options.GetString("kernelCache"), kernels, out string reason);
        return _runtime is null ? ProbeResult.Unavailable(reason) : ProbeResult.Available(100, reason);
    }

    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        var runtime = _runtime ?? throw new InvalidOperationException("cuda: ConfigureServices called without a successful probe");
        services.AddSingleton<IBackendDevice>(_ => new CudaDevice(runtime));
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Kernels;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// Entry type of the CUDA backend plugin: a thin binding of the CUDA driver API, NVRTC and cuBLAS under the shared GPU
/// code base (backends/Gpu). The probe resolves libcuda and NVRTC itself (a missing library is a rejection reason, never
/// an exception), opens the selected devices (default: every visible GPU) and loads the kernels, compiling them
/// with NVRTC on first use and caching the image on disk.
/// Options: <c>device</c> (index) or <c>devices</c> ("all", the default, or "0,1"), <c>virtual_devices</c> (N devices per GPU,
/// for testing splits: docs/multi-gpu.md#two-devices-on-one-gpu), <c>kernelCache</c> (folder for compiled kernels), <c>matvec</c> (int8 | f32),
/// <c>gemm</c> (cublas | kernels) and the rest of <see cref="GpuKernelOptions.FromCuda"/>.
/// </summary>
public sealed class CudaPlugin : GpuPlugin
{
    public override string Name => "cuda";

    private protected override GpuKernelOptions ReadKernelOptions(PluginOptions options)
        => GpuKernelOptions.FromCuda(options, Environment.GetEnvironmentVariable);

    private protected override int CountDevices(string pluginDirectory, out string reason) => CudaRuntime.CountDevices(out reason);

    private protected override GpuRuntime? TryCreateRuntime(int ordinal, int virtualIndex, string pluginDirectory, string? cacheDirectory, GpuKernelOptions kernels,
                                                            out string reason, out string details)
        => CudaRuntime.TryCreate(ordinal, virtualIndex, pluginDirectory, cacheDirectory, kernels, out reason, out details);
}

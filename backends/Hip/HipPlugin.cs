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
public sealed class HipPlugin : GpuPlugin
{
    public override string Name => "hip";

    private protected override GpuKernelOptions ReadKernelOptions(PluginOptions options)
        => GpuKernelOptions.FromHip(options, Environment.GetEnvironmentVariable);

    private protected override int CountDevices(string pluginDirectory, out string reason) => HipRuntime.CountDevices(pluginDirectory, out reason);

    // HIP has no separate contexts per device any more: a virtual device shares the GPU's and has its own streams and module.
    private protected override GpuRuntime? TryCreateRuntime(int ordinal, int virtualIndex, string pluginDirectory, string? cacheDirectory, GpuKernelOptions kernels,
                                                            out string reason, out string details)
        => HipRuntime.TryCreate(ordinal, pluginDirectory, cacheDirectory, kernels, out reason, out details);
}

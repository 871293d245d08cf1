using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Gpu;

/// <summary>
/// One GPU (CUDA or HIP) as a backend device: owned device memory, host-page import where the device can map host
/// memory, and an asynchronous op queue per stream. Integrated or discrete comes from the runtime (CUDA's and HIP's
/// "integrated" attribute); the core's host-import policy acts on it (docs/architecture.md#host-import-policy).
/// </summary>
internal sealed class GpuDevice : IBackendDevice
{
    internal GpuDevice(GpuRuntime runtime, string details)
    {
        Runtime = runtime;
        var (free, total) = runtime.QueryMemory();
        var caps = BackendCapabilities.None;
        if (runtime.Facts.CanMapHostMemory) caps |= BackendCapabilities.HostImport;
        // Virtual devices of one GPU (docs/multi-gpu.md#two-devices-on-one-gpu) differ by a suffix, so placement, plans and
        // transfer counts tell them apart.
        var v = runtime.Virtual;
        Description = new DeviceDescription(
            Backend: runtime.Backend,
            Name: v is { } vn ? $"{runtime.Name} (virtual {vn.Index} of {vn.Count})" : runtime.Name,
            Kind: runtime.Facts.Integrated ? DeviceKind.IntegratedGpu : DeviceKind.DiscreteGpu,
            StableId: v is { } vi ? $"{runtime.Facts.StableId}/v{vi.Index}" : runtime.Facts.StableId,
            TotalMemory: total,
            FreeMemory: free,
            Capabilities: caps,
            Details: details);
        Buffers = new GpuBufferProvider(this);
    }

    internal GpuRuntime Runtime { get; }

    public DeviceDescription Description { get; }

    public IBufferProvider Buffers { get; }

    /// <summary>A queue on a new stream of this device.</summary>
    public IComputeQueue CreateQueue() => new GpuComputeQueue(this);
}

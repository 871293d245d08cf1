using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cuda;

/// <summary>One CUDA GPU as a backend device: owned device memory, host-page import, and an asynchronous op queue per context.</summary>
public sealed class CudaDevice : IBackendDevice
{
    internal CudaDevice(CudaRuntime runtime)
    {
        Runtime = runtime;
        var (free, total) = runtime.QueryMemory();
        var caps = BackendCapabilities.None;
        if (runtime.CanMapHostMemory) caps |= BackendCapabilities.HostImport;
        Description = new DeviceDescription(
            Backend: "cuda",
            Name: runtime.Name,
            Kind: runtime.Integrated ? DeviceKind.IntegratedGpu : DeviceKind.DiscreteGpu,
            StableId: runtime.PciBusId,
            TotalMemory: total,
            FreeMemory: free,
            Capabilities: caps,
            Details: $"sm_{runtime.Major}{runtime.Minor}, {runtime.Multiprocessors} SMs, driver {runtime.DriverVersion / 1000}.{runtime.DriverVersion % 1000 / 10}, " +
                     $"NVRTC {runtime.NvrtcVersion}, read-only host register {(runtime.ReadOnlyHostRegister ? "yes" : "no")}");
        Buffers = new CudaBufferProvider(this);
    }

    internal CudaRuntime Runtime { get; }

    public DeviceDescription Description { get; }

    public IBufferProvider Buffers { get; }

    /// <summary>A queue on a new stream of this device.</summary>
    public IComputeQueue CreateQueue() => new CudaComputeQueue(this);
}

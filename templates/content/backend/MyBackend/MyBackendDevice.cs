using PluginEngine.Abstractions;

namespace MyBackend;

/// <summary>One device: its description, its buffers and its compute queue.</summary>
public sealed class MyBackendDevice : IBackendDevice
{
    public MyBackendDevice(int index)
    {
        long memory = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        // No HostImport: every weight is copied into owned buffers (the loader decides; see the guide's memory rules).
        Description = new DeviceDescription("mybackend", "MyBackend (plain C#)", DeviceKind.Accelerator, $"mybackend:{index}",
                                            memory, memory, BackendCapabilities.None, "host memory, scalar C# kernels");
        Buffers = new MyBackendBuffers(Description);
    }

    public DeviceDescription Description { get; }

    public IBufferProvider Buffers { get; }

    public IComputeQueue CreateQueue() => new MyBackendQueue(this);
}

/// <summary>
/// Owned buffers in host memory (<see cref="HostMemoryBuffer"/>). Every other member keeps <see cref="BufferProviderBase"/>'s
/// default: alignment 32, no slide (GetAllocSize = the tensor's size), host import refused.
/// </summary>
public sealed class MyBackendBuffers(DeviceDescription device) : BufferProviderBase
{
    public override DeviceDescription Device { get; } = device;

    public override BackendBuffer AllocateOwned(string name, long size) => new HostMemoryBuffer(name, size);
}

namespace PluginEngine.Abstractions;

/// <summary>What kind of device a backend drives.</summary>
public enum DeviceKind
{
    /// <summary>The host processor.</summary>
    Cpu,
    /// <summary>A GPU with its own memory.</summary>
    DiscreteGpu,
    /// <summary>A GPU sharing host memory (unified memory); host import is the natural mode.</summary>
    IntegratedGpu,
    /// <summary>Anything else (an accelerator card, a simulator).</summary>
    Accelerator,
}

/// <summary>Capabilities a device declares. The loader and scheduler only use what is declared.</summary>
[Flags]
public enum BackendCapabilities
{
    /// <summary>Nothing beyond the required members (every device allocates owned buffers).</summary>
    None = 0,
    // 1 << 0 (OwnedBuffers), 1 << 2 (Async) and 1 << 4 (Graphs) were API 1.0 flags nothing read; removed in 1.1. Those bits
    // stay reserved: a 1.0 plugin may still set them, and they are ignored.
    /// <summary>Can import host pages of a mapping (<see cref="IBufferProvider.TryImportHost"/>); read by the loader's host-import policy. Default: off.</summary>
    HostImport = 1 << 1,
    /// <summary>Reads weights in place from host memory without any registration (the CPU); the loader then maps instead of copying. Default: off.</summary>
    HostMemoryInPlace = 1 << 3,
}

/// <summary>Static facts about one device.</summary>
/// <param name="Backend">Backend name this device belongs to (e.g. "cpu", "cuda").</param>
/// <param name="Name">Human-readable device name (e.g. "NVIDIA H100 80GB HBM3").</param>
/// <param name="Kind">Device kind.</param>
/// <param name="StableId">An id that survives reboots and enumeration order (PCI bus id where there is one).</param>
/// <param name="TotalMemory">Bytes of memory the device can use.</param>
/// <param name="FreeMemory">Bytes free when described.</param>
/// <param name="Capabilities">Declared capabilities.</param>
/// <param name="Details">Free-form extra facts (driver version, ISA, compute capability), shown by <c>backends</c>.</param>
public sealed record DeviceDescription(
    string Backend,
    string Name,
    DeviceKind Kind,
    string StableId,
    long TotalMemory,
    long FreeMemory,
    BackendCapabilities Capabilities,
    string Details = "")
{
    /// <summary>True when the device declares <paramref name="capability"/>.</summary>
    public bool Has(BackendCapabilities capability) => (Capabilities & capability) == capability;
}

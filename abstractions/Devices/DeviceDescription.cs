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
    /// <summary>Nothing beyond the required members.</summary>
    None = 0,
    /// <summary>Can allocate buffers it owns (<see cref="IBufferProvider.AllocateOwned"/>). Default for every device.</summary>
    OwnedBuffers = 1 << 0,
    /// <summary>Can import host pages of a mapping (<see cref="IBufferProvider.TryImportHost"/>). Default: off.</summary>
    HostImport = 1 << 1,
    /// <summary>Work is queued asynchronously and synchronized only when results are read. Default: off.</summary>
    Async = 1 << 2,
    /// <summary>Reads weights in place from host memory without any registration (the CPU). Default: off.</summary>
    HostMemoryInPlace = 1 << 3,
    /// <summary>Can record a decode step and replay it (CUDA graphs). Default: off.</summary>
    Graphs = 1 << 4,
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

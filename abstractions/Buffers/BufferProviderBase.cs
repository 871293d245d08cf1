namespace PluginEngine.Abstractions;

/// <summary>
/// A base class for <see cref="IBufferProvider"/> (since API 1.1). Each optional member is a virtual here, so an override
/// that does not match the contract's signature is a compile error instead of a silently unused method beside the
/// interface's default. Defaults (the same as <see cref="IBufferProvider"/>'s):
/// <see cref="Alignment"/> 32, <see cref="GetAllocSize"/> the tensor's byte size (no slide), <see cref="TryImportHost"/>
/// refused, <see cref="QueryMemory"/> the described values.
/// </summary>
public abstract class BufferProviderBase : IBufferProvider
{
    /// <summary>GGUF's default tensor alignment, the largest an in-place import can count on.</summary>
    public const long GgufAlignment = 32;

    /// <inheritdoc/>
    public abstract DeviceDescription Device { get; }

    /// <summary>
    /// Required alignment of a tensor's offset in an owned buffer and of an imported tensor's address. Default: 32.
    /// Keep it at 32 unless the kernels truly need more: GGUF files align tensors to 32 bytes, so a larger value makes
    /// every tensor whose file offset is not a multiple of it an owned copy instead of an in-place import (the placement
    /// plan says so per tensor: "copied: file offset … is not aligned to the … B the device requires").
    /// </summary>
    public virtual long Alignment => GgufAlignment;

    /// <summary>Bytes the kernels may touch for <paramref name="tensor"/> (its size plus the slide that must read as zero). Default: its byte size.</summary>
    public virtual long GetAllocSize(TensorInfo tensor) => tensor.ByteSize;

    /// <inheritdoc/>
    public abstract BackendBuffer AllocateOwned(string name, long size);

    /// <summary>Imports leased host pages; called only when <see cref="Device"/> declares <see cref="BackendCapabilities.HostImport"/>. Default: refused.</summary>
    public virtual HostImportResult TryImportHost(string name, IMappingLease lease)
        => HostImportResult.Refused($"{Device.Backend}: host import is not supported by this device");

    /// <summary>Current free/total memory. Default: the values in <see cref="Device"/>.</summary>
    public virtual (long Free, long Total) QueryMemory() => (Device.FreeMemory, Device.TotalMemory);
}

namespace PluginEngine.Abstractions;

/// <summary>
/// A device's buffer type: how big a tensor's allocation must be, how to allocate, and (optionally)
/// how to import host pages. The loader decides placement from these answers; the provider never
/// decides policy.
/// </summary>
public interface IBufferProvider
{
    /// <summary>The device these buffers live on.</summary>
    DeviceDescription Device { get; }

    /// <summary>Required alignment, in bytes, of a tensor's offset inside an owned buffer (and of an
    /// imported tensor's address). Default: 32 (GGUF's default alignment).</summary>
    long Alignment => 32;

    /// <summary>
    /// Bytes the backend's kernels may touch for <paramref name="tensor"/>: at least its byte size, plus the
    /// slide the kernels read past the last row (see <see cref="TensorPadding.SlideBytes"/>). Those extra
    /// bytes must read as zero. Default: exactly the tensor's byte size (no slide).
    /// </summary>
    long GetAllocSize(TensorInfo tensor) => tensor.ByteSize;

    /// <summary>Allocates an owned buffer of <paramref name="size"/> bytes (contents unspecified).</summary>
    BackendBuffer AllocateOwned(string name, long size);

    /// <summary>
    /// Imports the leased host range (page-aligned offset and length) as an <see cref="BufferOwnership.Imported"/>
    /// buffer. On success the buffer owns the lease; on refusal the caller still owns it and gets the reason.
    /// Only called when the device declares <see cref="BackendCapabilities.HostImport"/>.
    /// Default: refused ("host import not supported").
    /// </summary>
    HostImportResult TryImportHost(string name, IMappingLease lease)
        => HostImportResult.Refused($"{Device.Backend}: host import is not supported by this device");

    /// <summary>Current free/total device memory. Default: the values in <see cref="Device"/>.</summary>
    (long Free, long Total) QueryMemory() => (Device.FreeMemory, Device.TotalMemory);
}

/// <summary>Result of <see cref="IBufferProvider.TryImportHost"/>: a buffer, or the reason it was refused.</summary>
public readonly record struct HostImportResult(BackendBuffer? Buffer, string? RefusalReason)
{
    /// <summary>True when a buffer was created.</summary>
    public bool Succeeded => Buffer is not null;

    /// <summary>A successful import.</summary>
    public static HostImportResult Imported(BackendBuffer buffer) => new(buffer, null);

    /// <summary>A refused import with its reason (e.g. "cuMemHostRegister: CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED").</summary>
    public static HostImportResult Refused(string reason) => new(null, reason);
}

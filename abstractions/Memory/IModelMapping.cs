namespace PluginEngine.Abstractions;

/// <summary>What holds a model file's bytes in host memory.</summary>
public enum MappingBacking
{
    /// <summary>mmap of the GGUF file itself (MAP_SHARED, PROT_READ, read-only descriptor; shared so a GPU can register the pages: docs/architecture.md#memory-model).</summary>
    File,
    /// <summary>Anonymous 2 MiB huge pages (MAP_HUGETLB | MAP_POPULATE), filled by reading the file.</summary>
    HugePages,
    /// <summary>Anonymous normal pages (transparent huge pages requested with madvise), filled by reading the file.</summary>
    Anonymous,
    /// <summary>Process heap (no mmap at all), filled by reading the file.</summary>
    Heap,
}

/// <summary>Whether a mapping may be written, and when.</summary>
public enum MappingWritability
{
    /// <summary>Never written, ever (file mappings). Any write attempt is refused.</summary>
    ReadOnly,
    /// <summary>Writable while the model loads, then sealed read-only (mprotect) by <see cref="IModelMapping.Seal"/>.</summary>
    WritableDuringLoad,
    /// <summary>Always writable (heap).</summary>
    Writable,
}

/// <summary>How long a mapping's pages must live.</summary>
public enum MappingLifetime
{
    /// <summary>Nothing imports the pages: they may be released when loading ends (every tensor was copied out).</summary>
    LoadScoped,
    /// <summary>Some buffer imports (leases) the pages: they live until the model is disposed.</summary>
    ModelScoped,
}

/// <summary>
/// A model file's bytes in host memory, with the metadata the loader decides with.
/// Reading is always allowed; writing goes only through <see cref="OpenWrite"/>, which refuses
/// <see cref="MappingWritability.ReadOnly"/> mappings and sealed ones, so a write to a read-only
/// file mapping (a SIGSEGV) cannot be expressed.
/// Teardown order is enforced: disposing a mapping while leases are outstanding throws and keeps
/// the pages mapped (a leak is better than a device reading unmapped memory).
/// </summary>
public interface IModelMapping : IDisposable
{
    /// <summary>Path of the file the bytes came from.</summary>
    string SourcePath { get; }

    /// <summary>What holds the bytes.</summary>
    MappingBacking Backing { get; }

    /// <summary>Writability policy over time.</summary>
    MappingWritability Writability { get; }

    /// <summary><see cref="MappingLifetime.ModelScoped"/> once any lease was taken, else <see cref="MappingLifetime.LoadScoped"/>.</summary>
    MappingLifetime Lifetime { get; }

    /// <summary>True when bytes never written are guaranteed zero (fresh anonymous pages are; file pages are not).</summary>
    bool KnownZero { get; }

    /// <summary>True after <see cref="Seal"/>; no write is accepted from then on.</summary>
    bool IsSealed { get; }

    /// <summary>True when <see cref="OpenWrite"/> would succeed now.</summary>
    bool CanWrite { get; }

    /// <summary>Bytes mapped (at least the file's length; anonymous layouts may be larger).</summary>
    long Length { get; }

    /// <summary>Page size backing this mapping (4096, or 2 MiB for hugetlb). Import ranges align to it.</summary>
    long PageSize { get; }

    /// <summary>Host address of byte 0. For native registration and in-place reading only; writing through it is a contract violation.</summary>
    nint BaseAddress { get; }

    /// <summary>Number of leases currently held by importers.</summary>
    int ActiveLeases { get; }

    /// <summary>Read-only view of <paramref name="length"/> bytes at <paramref name="offset"/> (bounds-checked).</summary>
    ReadOnlySpan<byte> Read(long offset, int length);

    /// <summary>
    /// Opens a write window over [offset, offset+length). Throws <see cref="MappingWriteRefusedException"/>
    /// for read-only mappings, sealed mappings, and ranges outside the mapping.
    /// </summary>
    MappingWriteWindow OpenWrite(long offset, int length);

    /// <summary>Makes the mapping read-only from now on (mprotect for anonymous/hugetlb pages). Idempotent.</summary>
    void Seal();

    /// <summary>
    /// Takes a lease on [offset, offset+length) for an importer (a buffer that uses these pages in place).
    /// The mapping becomes <see cref="MappingLifetime.ModelScoped"/>. The lease must be disposed before the mapping.
    /// </summary>
    IMappingLease AcquireLease(long offset, long length, string holder);
}

/// <summary>A held claim on a range of a mapping's pages; while any exists, the mapping refuses to unmap.</summary>
public interface IMappingLease : IDisposable
{
    /// <summary>The mapping leased from.</summary>
    IModelMapping Mapping { get; }

    /// <summary>Offset of the range in the mapping.</summary>
    long Offset { get; }

    /// <summary>Length of the range.</summary>
    long Length { get; }

    /// <summary>Host address of the range's first byte.</summary>
    nint HostAddress { get; }

    /// <summary>Who holds it (for diagnostics, e.g. "cuda:0 import blk.0").</summary>
    string Holder { get; }

    /// <summary>True once disposed.</summary>
    bool IsReleased { get; }
}

/// <summary>A scoped writable view of a mapping range, opened by <see cref="IModelMapping.OpenWrite"/>.</summary>
public readonly ref struct MappingWriteWindow
{
    private readonly Action? _onClose;

    /// <summary>Creates a window over <paramref name="bytes"/>; <paramref name="onClose"/> runs on dispose.</summary>
    public MappingWriteWindow(Span<byte> bytes, Action? onClose)
    {
        Bytes = bytes;
        _onClose = onClose;
    }

    /// <summary>The writable bytes.</summary>
    public Span<byte> Bytes { get; }

    /// <summary>Closes the window.</summary>
    public void Dispose() => _onClose?.Invoke();
}

/// <summary>A write to a mapping was refused (read-only, sealed, or out of range). Nothing was written.</summary>
public sealed class MappingWriteRefusedException(string message) : InvalidOperationException(message);

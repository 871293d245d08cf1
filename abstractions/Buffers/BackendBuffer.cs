namespace PluginEngine.Abstractions;

/// <summary>Who allocated a buffer's memory.</summary>
public enum BufferOwnership
{
    /// <summary>Allocated by the backend; the loader uploads into it and its tensor-init zeroes slides.</summary>
    Owned,
    /// <summary>Wraps host pages of a mapping (external). Never written by anyone: init is a no-op, writes throw.</summary>
    Imported,
}

/// <summary>
/// A backend's buffer. Backends derive from this class and implement the <c>…Core</c> members;
/// the public members enforce the contract once, for every backend:
/// <list type="bullet">
/// <item>every write (upload, memset, clear, copy-into) to an <see cref="BufferOwnership.Imported"/> buffer throws
/// <see cref="ImportedBufferWriteException"/> before the backend is called;</item>
/// <item><see cref="InitTensor"/> of an imported buffer does nothing; of an owned buffer it zeroes the slide
/// (the bytes between the tensor's size and its alloc size);</item>
/// <item>ranges are bounds-checked;</item>
/// <item>disposal releases the device resource (<see cref="ReleaseCore"/>: free or unregister) first and the
/// mapping lease after, so pages are never unmapped while a device still maps them.</item>
/// </list>
/// </summary>
public abstract class BackendBuffer : IDisposable
{
    private int _disposed;

    /// <summary>Creates an owned buffer of <paramref name="size"/> bytes.</summary>
    protected BackendBuffer(string name, long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        Name = name;
        Size = size;
        Ownership = BufferOwnership.Owned;
    }

    /// <summary>Creates an imported buffer over the pages of <paramref name="lease"/>; the buffer owns the lease from now on.</summary>
    protected BackendBuffer(string name, IMappingLease lease)
    {
        ArgumentNullException.ThrowIfNull(lease);
        if (lease.IsReleased) throw new ArgumentException($"lease on {lease.Mapping.SourcePath} was already released", nameof(lease));
        Name = name;
        Size = lease.Length;
        Ownership = BufferOwnership.Imported;
        ImportLease = lease;
    }

    /// <summary>Diagnostic name (e.g. "cuda:0 weights" or "import blk.3-blk.5").</summary>
    public string Name { get; }

    /// <summary>Bytes in the buffer.</summary>
    public long Size { get; }

    /// <summary>Owned or imported.</summary>
    public BufferOwnership Ownership { get; }

    /// <summary>The mapping lease of an imported buffer; null for owned buffers.</summary>
    public IMappingLease? ImportLease { get; }

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>
    /// Address of byte 0 as the device sees it: a device pointer for GPUs (for imports, what the runtime returned
    /// from registration, never assumed equal to the host address), a host pointer for the CPU, 0 where the backend
    /// uses opaque handles instead.
    /// </summary>
    public abstract nint DeviceAddress { get; }

    /// <summary>
    /// Prepares a tensor placed at <paramref name="offset"/> whose kernels may touch <paramref name="allocSize"/> bytes.
    /// Imported buffers: no-op by contract (the loader guaranteed the slide is zero). Owned buffers:
    /// zeroes [offset + tensor.ByteSize, offset + allocSize) through <see cref="InitTensorCore"/>.
    /// </summary>
    public void InitTensor(TensorInfo tensor, long offset, long allocSize)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ThrowIfDisposed();
        if (Ownership == BufferOwnership.Imported) return;
        if (allocSize < tensor.ByteSize) throw new ArgumentOutOfRangeException(nameof(allocSize), $"alloc size {allocSize} is smaller than tensor '{tensor.Name}' ({tensor.ByteSize} B)");
        CheckRange(offset, allocSize, "init tensor");
        InitTensorCore(tensor, offset, allocSize);
    }

    /// <summary>Copies host bytes into the buffer. Throws for imported buffers.</summary>
    public void Upload(long offset, ReadOnlySpan<byte> source)
    {
        ThrowIfImported("upload");
        CheckRange(offset, source.Length, "upload");
        UploadCore(offset, source);
    }

    /// <summary>Sets <paramref name="length"/> bytes to <paramref name="value"/>. Throws for imported buffers.</summary>
    public void Memset(long offset, long length, byte value)
    {
        ThrowIfImported("memset");
        CheckRange(offset, length, "memset");
        if (length > 0) MemsetCore(offset, length, value);
    }

    /// <summary>Sets every byte to <paramref name="value"/>. Throws for imported buffers.</summary>
    public void Clear(byte value = 0)
    {
        ThrowIfImported("clear");
        ThrowIfDisposed();
        if (Size > 0) MemsetCore(0, Size, value);
    }

    /// <summary>Copies bytes from another buffer of the same backend into this one. Throws when this buffer is imported.</summary>
    public void CopyFrom(BackendBuffer source, long sourceOffset, long destinationOffset, long length)
    {
        ArgumentNullException.ThrowIfNull(source);
        ThrowIfImported("copy into");
        source.CheckRange(sourceOffset, length, "copy from");
        CheckRange(destinationOffset, length, "copy into");
        if (length > 0) CopyFromCore(source, sourceOffset, destinationOffset, length);
    }

    /// <summary>Copies bytes out of the buffer to host memory (allowed for every buffer).</summary>
    public void Download(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length, "download");
        DownloadCore(offset, destination);
    }

    /// <summary>Backend: zero the slide of an owned tensor. Default: <see cref="MemsetCore"/> on the slide.</summary>
    protected virtual void InitTensorCore(TensorInfo tensor, long offset, long allocSize)
    {
        long slide = allocSize - tensor.ByteSize;
        if (slide > 0) MemsetCore(offset + tensor.ByteSize, slide, 0);
    }

    /// <summary>Backend: copy host bytes in (only called for owned buffers, range checked).</summary>
    protected abstract void UploadCore(long offset, ReadOnlySpan<byte> source);

    /// <summary>Backend: fill bytes (only called for owned buffers, range checked).</summary>
    protected abstract void MemsetCore(long offset, long length, byte value);

    /// <summary>Backend: copy bytes out (range checked).</summary>
    protected abstract void DownloadCore(long offset, Span<byte> destination);

    /// <summary>Backend: buffer-to-buffer copy into this owned buffer. Default: stage through host memory in 4 MiB chunks.</summary>
    protected virtual void CopyFromCore(BackendBuffer source, long sourceOffset, long destinationOffset, long length)
    {
        byte[] staging = new byte[(int)Math.Min(length, 4 << 20)];
        for (long done = 0; done < length;)
        {
            int n = (int)Math.Min(staging.Length, length - done);
            source.DownloadCore(sourceOffset + done, staging.AsSpan(0, n));
            UploadCore(destinationOffset + done, staging.AsSpan(0, n));
            done += n;
        }
    }

    /// <summary>Backend: free device memory (owned) or unregister the host pages (imported). Called once.</summary>
    protected abstract void ReleaseCore();

    /// <summary>Throws when [offset, offset+length) is not inside the buffer.</summary>
    protected void CheckRange(long offset, long length, string operation)
    {
        ThrowIfDisposed();
        if (offset < 0 || length < 0 || offset > Size || length > Size - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{operation} of {length} B at offset {offset} is outside buffer '{Name}' ({Size} B)");
    }

    private void ThrowIfImported(string operation)
    {
        ThrowIfDisposed();
        if (Ownership == BufferOwnership.Imported)
            throw new ImportedBufferWriteException(Name, operation, ImportLease!);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(IsDisposed, this);

    /// <summary>Releases the device resource, then the lease (teardown order: unregister → unmap → close).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try { ReleaseCore(); }
        finally { ImportLease?.Dispose(); }
        GC.SuppressFinalize(this);
    }
}

/// <summary>Somebody tried to write into an imported (external) buffer. Nothing was written.</summary>
public sealed class ImportedBufferWriteException(string buffer, string operation, IMappingLease lease)
    : InvalidOperationException(
        $"{operation} refused: buffer '{buffer}' imports host pages of '{lease.Mapping.SourcePath}' " +
        $"({lease.Mapping.Backing}, {lease.Mapping.Writability}, offset {lease.Offset}, {lease.Length} B); " +
        "imported buffers are never written — the loader owns their bytes and their padding")
{
    /// <summary>The operation refused (upload, memset, clear, copy into).</summary>
    public string Operation { get; } = operation;
}

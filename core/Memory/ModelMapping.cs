using System.Text;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Memory;

/// <summary>
/// What every mapping backing shares: bounds-checked reads, the write-window gate, sealing, leases and
/// the teardown order (refuse while leased → unmap → close). Subclasses only provide the pages
/// (<see cref="ReleasePages"/>), how sealing protects them (<see cref="ProtectPagesOnSeal"/>) and
/// whatever source handle must be closed after unmapping (<see cref="CloseSource"/>).
/// There is deliberately no finalizer: an abandoned mapping may still be read by a device through a raw
/// address, so its pages are leaked rather than unmapped behind the importer's back.
/// </summary>
public abstract class ModelMapping : IModelMapping
{
    // Guards every state transition (window open/close, seal, lease take/release, dispose) so that a
    // seal cannot slip between a window's check and its registration, nor a dispose between a lease's
    // check and its registration. None of these is on a per-byte path.
    private readonly Lock _gate = new();
    private readonly List<MappingLease> _leases = [];
    private int _openWindows;
    private int _activeLeases;
    private bool _everLeased;
    private volatile bool _sealed;
    private volatile bool _disposed;

    /// <summary>Sets the facts every mapping reports; <paramref name="baseAddress"/> must already be mapped for <paramref name="length"/> bytes.</summary>
    protected ModelMapping(
        string sourcePath,
        MappingBacking backing,
        MappingWritability writability,
        bool knownZero,
        nint baseAddress,
        long length,
        long pageSize)
    {
        SourcePath = sourcePath;
        Backing = backing;
        Writability = writability;
        KnownZero = knownZero;
        BaseAddress = baseAddress;
        Length = length;
        PageSize = pageSize;
    }

    /// <inheritdoc />
    public string SourcePath { get; }

    /// <inheritdoc />
    public MappingBacking Backing { get; }

    /// <inheritdoc />
    public MappingWritability Writability { get; }

    /// <inheritdoc />
    public MappingLifetime Lifetime => Volatile.Read(ref _everLeased) ? MappingLifetime.ModelScoped : MappingLifetime.LoadScoped;

    /// <inheritdoc />
    public bool KnownZero { get; }

    /// <inheritdoc />
    public bool IsSealed => _sealed;

    /// <inheritdoc />
    public bool CanWrite => Writability != MappingWritability.ReadOnly && !_sealed && !_disposed;

    /// <inheritdoc />
    public long Length { get; }

    /// <inheritdoc />
    public long PageSize { get; }

    /// <summary>
    /// Bytes really backed by pages: <see cref="Length"/> rounded up to <see cref="PageSize"/>. The tail past
    /// <see cref="Length"/> is readable (zero for file mappings past end of file), so leases may reach it:
    /// importers register whole pages.
    /// </summary>
    public long MappedLength => RoundUp(Length, PageSize);

    /// <inheritdoc />
    public nint BaseAddress { get; }

    /// <inheritdoc />
    public int ActiveLeases => Volatile.Read(ref _activeLeases);

    /// <summary>Number of write windows currently open.</summary>
    public int OpenWindows => Volatile.Read(ref _openWindows);

    /// <summary>True once the pages were unmapped.</summary>
    public bool IsDisposed => _disposed;

    /// <summary>Holders of the leases still held, in the order they were taken.</summary>
    public IReadOnlyList<string> LeaseHolders
    {
        get
        {
            lock (_gate)
            {
                return _leases.Select(l => l.Holder).ToArray();
            }
        }
    }

    /// <inheritdoc />
    public unsafe ReadOnlySpan<byte> Read(long offset, int length)
    {
        ThrowIfDisposed();
        if (offset < 0 || length < 0 || offset > Length - length)
        {
            throw new ArgumentOutOfRangeException(
                nameof(offset),
                $"read of [{offset}, {offset + length}) ({length} bytes) is outside the {Length}-byte {Backing} mapping of '{SourcePath}'.");
        }

        return new ReadOnlySpan<byte>((byte*)BaseAddress + offset, length);
    }

    /// <inheritdoc />
    public unsafe MappingWriteWindow OpenWrite(long offset, int length)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            string? refusal = null;
            if (Writability == MappingWritability.ReadOnly)
            {
                refusal = Backing == MappingBacking.File
                    ? "the mapping is read-only (PROT_READ file mapping; a write would fault with SIGSEGV)"
                    : "the mapping is read-only";
            }
            else if (_sealed)
            {
                refusal = Backing is MappingBacking.HugePages or MappingBacking.Anonymous
                    ? "the mapping was sealed read-only (mprotect PROT_READ) when loading ended"
                    : "the mapping was sealed when loading ended";
            }
            else if (offset < 0 || length < 0 || offset > Length - length)
            {
                refusal = $"the window lies outside the mapping's {Length} bytes";
            }

            if (refusal is not null)
            {
                throw new MappingWriteRefusedException(
                    $"Write of [{offset}, {offset + length}) ({length} bytes) to the {Backing} mapping of '{SourcePath}' " +
                    $"was refused: {refusal}. Nothing was written.");
            }

            _openWindows++;
        }

        // The contract's window closes through an Action; a per-window closer (one small allocation per window,
        // not per byte) makes a second Dispose of the same window harmless instead of closing someone else's.
        var closer = new WindowCloser(this);
        return new MappingWriteWindow(new Span<byte>((byte*)BaseAddress + offset, length), closer.Close);
    }

    /// <inheritdoc />
    public void Seal()
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (_sealed)
            {
                return;
            }

            if (_openWindows > 0)
            {
                throw new InvalidOperationException(
                    $"Cannot seal the {Backing} mapping of '{SourcePath}': {_openWindows} write window(s) are still open. " +
                    "Dispose every window returned by OpenWrite before sealing.");
            }

            ProtectPagesOnSeal();
            _sealed = true;
        }
    }

    /// <inheritdoc />
    public IMappingLease AcquireLease(long offset, long length, string holder)
    {
        if (string.IsNullOrWhiteSpace(holder))
        {
            throw new ArgumentException($"A lease on '{SourcePath}' needs a holder name for diagnostics.", nameof(holder));
        }

        if (length <= 0)
        {
            throw new ArgumentOutOfRangeException(
                nameof(length), $"Lease for {holder} on '{SourcePath}' has length {length}; it must be positive.");
        }

        if (offset < 0 || offset % PageSize != 0)
        {
            throw new ArgumentOutOfRangeException(
                nameof(offset),
                $"Lease for {holder} on '{SourcePath}' starts at offset {offset}, which is not a multiple of the mapping's page size {PageSize}.");
        }

        if (offset > MappedLength - length)
        {
            throw new ArgumentOutOfRangeException(
                nameof(length),
                $"Lease for {holder} on '{SourcePath}' covers [{offset}, {offset + length}), beyond the {MappedLength} mapped bytes " +
                $"({Length} bytes rounded up to {PageSize}-byte pages).");
        }

        lock (_gate)
        {
            ThrowIfDisposed();
            var lease = new MappingLease(this, offset, length, holder);
            _leases.Add(lease);
            _activeLeases++;
            Volatile.Write(ref _everLeased, true);
            return lease;
        }
    }

    /// <summary>
    /// Unmaps the pages and then closes the source. Throws <see cref="InvalidOperationException"/> naming the
    /// holders while leases are held, and leaves the pages mapped (a leak is better than a device reading
    /// unmapped memory); dispose the leases and call again. Idempotent once it succeeded.
    /// </summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            if (_leases.Count > 0)
            {
                throw new InvalidOperationException(DescribeHeldLeases());
            }

            if (_openWindows > 0)
            {
                throw new InvalidOperationException(
                    $"Cannot unmap the {Backing} mapping of '{SourcePath}': {_openWindows} write window(s) are still open; " +
                    "the pages stay mapped.");
            }

            _disposed = true;
            try
            {
                ReleasePages();
            }
            finally
            {
                // Teardown order: unmap, then close the file (also when unmapping failed).
                CloseSource();
            }
        }
    }

    /// <inheritdoc />
    public override string ToString() =>
        $"{Backing} mapping of '{SourcePath}' ({Length} bytes, {PageSize}-byte pages, {Writability}{(IsSealed ? ", sealed" : "")}, " +
        $"{ActiveLeases} lease(s))";

    /// <summary>Makes the pages read-only when <see cref="Seal"/> runs. The default only marks the mapping sealed.</summary>
    protected virtual void ProtectPagesOnSeal()
    {
    }

    /// <summary>Unmaps or frees the pages. Called once, with no lease or window outstanding.</summary>
    protected abstract void ReleasePages();

    /// <summary>Closes what the pages came from (a file descriptor). Called once, after <see cref="ReleasePages"/>.</summary>
    protected virtual void CloseSource()
    {
    }

    /// <summary>Rounds <paramref name="value"/> up to a multiple of <paramref name="multiple"/>.</summary>
    protected static long RoundUp(long value, long multiple) => (value + multiple - 1) / multiple * multiple;

    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            throw new ObjectDisposedException(GetType().Name, $"The {Backing} mapping of '{SourcePath}' was already unmapped.");
        }
    }

    private string DescribeHeldLeases()
    {
        var text = new StringBuilder();
        text.Append($"Cannot unmap the {Backing} mapping of '{SourcePath}': {_leases.Count} lease(s) are still held by ");
        for (int i = 0; i < _leases.Count; i++)
        {
            var lease = _leases[i];
            if (i > 0)
            {
                text.Append(", ");
            }

            text.Append($"'{lease.Holder}' [{lease.Offset}, {lease.Offset + lease.Length})");
        }

        text.Append(". Release device imports first (teardown order: unregister → unmap → close); the pages stay mapped.");
        return text.ToString();
    }

    private void CloseWindow()
    {
        lock (_gate)
        {
            _openWindows--;
        }
    }

    private void ReleaseLease(MappingLease lease)
    {
        lock (_gate)
        {
            if (_leases.Remove(lease))
            {
                _activeLeases--;
            }
        }
    }

    /// <summary>Closes one window exactly once, however often the window is disposed.</summary>
    private sealed class WindowCloser(ModelMapping mapping)
    {
        private int _closed;

        public void Close()
        {
            if (Interlocked.Exchange(ref _closed, 1) == 0)
            {
                mapping.CloseWindow();
            }
        }
    }

    /// <summary>A held claim on a page-aligned range; disposing it (once or more) gives it back.</summary>
    private sealed class MappingLease(ModelMapping mapping, long offset, long length, string holder) : IMappingLease
    {
        private int _released;

        public IModelMapping Mapping => mapping;

        public long Offset => offset;

        public long Length => length;

        public nint HostAddress => mapping.BaseAddress + (nint)offset;

        public string Holder => holder;

        public bool IsReleased => Volatile.Read(ref _released) != 0;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                mapping.ReleaseLease(this);
            }
        }

        public override string ToString() => $"lease by '{holder}' on [{offset}, {offset + length}) of {mapping.SourcePath}";
    }
}

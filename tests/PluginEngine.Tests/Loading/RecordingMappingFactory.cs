using Microsoft.Win32.SafeHandles;
using PluginEngine.Abstractions;
using PluginEngine.Core.Loading;

namespace PluginEngine.Tests.Loading;

/// <summary>The real mappings, wrapped so tests can see when leases are released and pages unmapped.</summary>
internal sealed class RecordingMappingFactory(List<string> events) : IMappingFactory
{
    public List<IModelMapping> Created { get; } = [];

    public IModelMapping MapFile(string path) => Track(SystemMappingFactory.Instance.MapFile(path));

    public IModelMapping CreateAnonymous(string sourcePath, long length, bool hugePages) => Track(SystemMappingFactory.Instance.CreateAnonymous(sourcePath, length, hugePages));

    public IModelMapping CreateHeap(string sourcePath, long length) => Track(SystemMappingFactory.Instance.CreateHeap(sourcePath, length));

    public void CopyFromFile(IModelMapping target, SafeFileHandle file, long fileOffset, long mappingOffset, long length, CancellationToken cancellation)
        => SystemMappingFactory.Instance.CopyFromFile(((RecordingMapping)target).Inner, file, fileOffset, mappingOffset, length, cancellation);

    private IModelMapping Track(IModelMapping inner)
    {
        var m = new RecordingMapping(inner, events);
        Created.Add(m);
        return m;
    }
}

internal sealed class RecordingMapping(IModelMapping inner, List<string> events) : IModelMapping
{
    public IModelMapping Inner => inner;
    public bool Disposed { get; private set; }
    public string SourcePath => inner.SourcePath;
    public MappingBacking Backing => inner.Backing;
    public MappingWritability Writability => inner.Writability;
    public MappingLifetime Lifetime => inner.Lifetime;
    public bool KnownZero => inner.KnownZero;
    public bool IsSealed => inner.IsSealed;
    public bool CanWrite => inner.CanWrite;
    public long Length => inner.Length;
    public long PageSize => inner.PageSize;
    public nint BaseAddress => inner.BaseAddress;
    public int ActiveLeases => inner.ActiveLeases;
    public ReadOnlySpan<byte> Read(long offset, int length) => inner.Read(offset, length);
    public MappingWriteWindow OpenWrite(long offset, int length) => inner.OpenWrite(offset, length);
    public void Seal() => inner.Seal();

    public IMappingLease AcquireLease(long offset, long length, string holder) => new RecordingLease(inner.AcquireLease(offset, length, holder), this, events);

    public void Dispose()
    {
        events.Add("unmap");
        inner.Dispose();
        Disposed = true;
    }

    private sealed class RecordingLease(IMappingLease lease, IModelMapping owner, List<string> events) : IMappingLease
    {
        public IModelMapping Mapping => owner;
        public long Offset => lease.Offset;
        public long Length => lease.Length;
        public nint HostAddress => lease.HostAddress;
        public string Holder => lease.Holder;
        public bool IsReleased => lease.IsReleased;

        public void Dispose()
        {
            if (!lease.IsReleased) events.Add($"lease released {Holder}");
            lease.Dispose();
        }
    }
}

using PluginEngine.Abstractions;

namespace PluginEngine.Tests.Loading;

/// <summary>
/// A test backend shaped like a discrete GPU with CUDA's 512-element row padding: it imports host pages and
/// records every write it is asked to make, so tests can prove the loader never writes imported memory and
/// that owned slides are zeroed by the backend's init.
/// </summary>
internal sealed class RecordingDevice : IBackendDevice
{
    public RecordingDevice(string name = "rec", DeviceKind kind = DeviceKind.DiscreteGpu, bool hostImport = true, List<string>? events = null)
    {
        Events = events ?? [];
        Description = new DeviceDescription(name, $"recording {kind}", kind, $"{name}:0", 1L << 34, 1L << 34,
            hostImport ? BackendCapabilities.HostImport : BackendCapabilities.None);
        Provider = new RecordingProvider(this);
    }

    public DeviceDescription Description { get; }

    public IBufferProvider Buffers => Provider;

    public RecordingProvider Provider { get; }

    /// <summary>Ordered log shared with the mapping wrapper: "alloc", "import", "release …", "unmap".</summary>
    public List<string> Events { get; }

    /// <summary>Every write (upload/memset) the backend was asked to make, by buffer name.</summary>
    public List<(string Buffer, BufferOwnership Ownership, string Op, long Offset, long Length)> Writes { get; } = [];

    /// <summary>When set, imports are refused with this reason.</summary>
    public string? RefuseImports { get; set; }

    /// <summary>Called after each successful import (tests cancel loads from here).</summary>
    public Action? OnImport { get; set; }

    /// <summary>When set, AllocateOwned throws (to simulate a load failing midway).</summary>
    public bool FailOwnedAllocation { get; set; }

    public List<RecordingOwnedBuffer> OwnedBuffers { get; } = [];

    public List<RecordingImportedBuffer> ImportedBuffers { get; } = [];
}

internal sealed class RecordingProvider(RecordingDevice device) : IBufferProvider
{
    public const int RowPadding = 512;

    public DeviceDescription Device => device.Description;

    public long Alignment => 32;

    public long GetAllocSize(TensorInfo tensor) => tensor.ByteSize + TensorPadding.SlideBytes(tensor, RowPadding);

    public BackendBuffer AllocateOwned(string name, long size)
    {
        if (device.FailOwnedAllocation) throw new OutOfMemoryException($"{name}: simulated device out of memory");
        var b = new RecordingOwnedBuffer(device, name, size);
        device.OwnedBuffers.Add(b);
        device.Events.Add($"alloc {name}");
        return b;
    }

    public HostImportResult TryImportHost(string name, IMappingLease lease)
    {
        if (device.RefuseImports is { } reason) return HostImportResult.Refused(reason);
        var b = new RecordingImportedBuffer(device, name, lease);
        device.ImportedBuffers.Add(b);
        device.Events.Add($"import {name}");
        device.OnImport?.Invoke();
        return HostImportResult.Imported(b);
    }
}

/// <summary>"Device memory" is a byte array pre-filled with garbage (0xCD), like fresh cudaMalloc memory may be.</summary>
internal sealed class RecordingOwnedBuffer : BackendBuffer
{
    private readonly RecordingDevice _device;

    public RecordingOwnedBuffer(RecordingDevice device, string name, long size) : base(name, size)
    {
        _device = device;
        Memory = new byte[size];
        Memory.AsSpan().Fill(0xCD);
    }

    public byte[] Memory { get; }

    public override nint DeviceAddress => 0x1000_0000;

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source)
    {
        _device.Writes.Add((Name, Ownership, "upload", offset, source.Length));
        source.CopyTo(Memory.AsSpan((int)offset));
    }

    protected override void MemsetCore(long offset, long length, byte value)
    {
        _device.Writes.Add((Name, Ownership, "memset", offset, length));
        Memory.AsSpan((int)offset, (int)length).Fill(value);
    }

    protected override void DownloadCore(long offset, Span<byte> destination) => Memory.AsSpan((int)offset, destination.Length).CopyTo(destination);

    protected override void ReleaseCore() => _device.Events.Add($"release {Name}");
}

/// <summary>Reads the leased host pages directly, the way a GPU reads registered host memory.</summary>
internal sealed unsafe class RecordingImportedBuffer(RecordingDevice device, string name, IMappingLease lease) : BackendBuffer(name, lease)
{
    public override nint DeviceAddress => ImportLease!.HostAddress + 0x7000_0000; // a device address unlike the host one

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source) => device.Writes.Add((Name, Ownership, "upload", offset, source.Length));

    protected override void MemsetCore(long offset, long length, byte value) => device.Writes.Add((Name, Ownership, "memset", offset, length));

    protected override void DownloadCore(long offset, Span<byte> destination)
        => new ReadOnlySpan<byte>((byte*)ImportLease!.HostAddress + offset, destination.Length).CopyTo(destination);

    protected override void ReleaseCore() => device.Events.Add($"release {Name}");
}

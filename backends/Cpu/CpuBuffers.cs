using System.Runtime.InteropServices;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu;

/// <summary>
/// CPU buffers. Owned: 64-byte aligned native memory. Imported: the mapping's pages used in place
/// (the device address is the host address). CPU kernels handle row tails themselves, so no slide
/// is ever needed and every tensor can be used in place from any mapping.
/// </summary>
public sealed class CpuBufferProvider(DeviceDescription device) : IBufferProvider
{
    public DeviceDescription Device { get; } = device;

    /// <summary>
    /// 32, GGUF's default tensor alignment: the kernels use unaligned SIMD loads, so anything GGUF lays out can be read
    /// in place. (Asking for 64 made every tensor of a 32-aligned file an owned copy.)
    /// </summary>
    public long Alignment => 32;

    public BackendBuffer AllocateOwned(string name, long size) => new CpuOwnedBuffer(name, size);

    public HostImportResult TryImportHost(string name, IMappingLease lease) => HostImportResult.Imported(new CpuImportedBuffer(name, lease));
}

/// <summary>A CPU buffer's repacked weight copies (<see cref="RepackedWeightStore"/>), released with the buffer.</summary>
internal interface ICpuBuffer
{
    RepackedWeightStore Repacked { get; }
}

/// <summary>Native memory owned by the CPU backend.</summary>
internal sealed unsafe class CpuOwnedBuffer : BackendBuffer, ICpuBuffer
{
    private readonly byte* _data;

    public CpuOwnedBuffer(string name, long size) : base(name, size)
        => _data = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(size, 1), 64);

    public override nint DeviceAddress => (nint)_data;

    public RepackedWeightStore Repacked { get; } = new();

    // Writes through the buffer API drop the repacked copies of what they overwrite (CopyFromCore's default goes through UploadCore).
    protected override void UploadCore(long offset, ReadOnlySpan<byte> source)
    {
        Repacked.Invalidate(offset, source.Length);
        source.CopyTo(new Span<byte>(_data + offset, source.Length));
    }

    protected override void MemsetCore(long offset, long length, byte value)
    {
        Repacked.Invalidate(offset, length);
        NativeMemory.Fill(_data + offset, (nuint)length, value);
    }

    protected override void DownloadCore(long offset, Span<byte> destination)
        => new ReadOnlySpan<byte>(_data + offset, destination.Length).CopyTo(destination);

    protected override void ReleaseCore()
    {
        Repacked.Dispose();
        NativeMemory.AlignedFree(_data);
    }
}

/// <summary>Host pages of a mapping used in place. Never written (the base class refuses every write; repacked copies of its
/// weights live in memory the backend allocates).</summary>
internal sealed unsafe class CpuImportedBuffer(string name, IMappingLease lease) : BackendBuffer(name, lease), ICpuBuffer
{
    public override nint DeviceAddress => ImportLease!.HostAddress;

    public RepackedWeightStore Repacked { get; } = new();

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source) => throw new System.Diagnostics.UnreachableException();

    protected override void MemsetCore(long offset, long length, byte value) => throw new System.Diagnostics.UnreachableException();

    protected override void DownloadCore(long offset, Span<byte> destination)
        => new ReadOnlySpan<byte>((byte*)ImportLease!.HostAddress + offset, destination.Length).CopyTo(destination);

    protected override void ReleaseCore() => Repacked.Dispose(); // nothing registered; the lease is released by the base class
}

using System.Runtime.InteropServices;

namespace PluginEngine.Abstractions;

/// <summary>
/// A buffer in host memory, ready to use by a backend whose kernels read host memory (a CPU-side backend, a device with
/// unified memory, a backend in plain C#): owned buffers are 64-byte aligned native memory; imported buffers are the
/// mapping's pages used in place (the device address is the host address, nothing registered). Since API 1.1.
/// Use it as is from <see cref="IBufferProvider.AllocateOwned"/> and <see cref="IBufferProvider.TryImportHost"/>, or derive
/// from it to add device state; <see cref="Span"/> gives kernels the bytes.
/// </summary>
public unsafe class HostMemoryBuffer : BackendBuffer
{
    private readonly byte* _data;

    /// <summary>Allocates an owned buffer of <paramref name="size"/> bytes (contents unspecified, 64-byte aligned).</summary>
    public HostMemoryBuffer(string name, long size) : base(name, size)
        => _data = (byte*)NativeMemory.AlignedAlloc((nuint)Math.Max(size, 1), 64);

    /// <summary>Wraps the pages of <paramref name="lease"/> in place (imported; the buffer owns the lease).</summary>
    public HostMemoryBuffer(string name, IMappingLease lease) : base(name, lease)
        => _data = (byte*)lease.HostAddress;

    /// <summary>The host address of byte 0.</summary>
    public override nint DeviceAddress => (nint)_data;

    /// <summary>
    /// The bytes [offset, offset + length) for reading (every buffer) or writing (owned buffers only: kernels write
    /// activations and caches, never imported weights). Range checked.
    /// </summary>
    public Span<byte> Span(long offset, long length)
    {
        CheckRange(offset, length, "span");
        if (length > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(length), $"span of {length} B: at most {int.MaxValue} B at once");
        return new Span<byte>(_data + offset, (int)length);
    }

    /// <summary>The elements of <paramref name="tensor"/> from its offset on, as <typeparamref name="T"/> (e.g. float for F32).</summary>
    public static Span<T> Elements<T>(DeviceTensor tensor, long count) where T : unmanaged
    {
        if (tensor.Buffer is not HostMemoryBuffer host)
            throw new ArgumentException($"buffer '{tensor.Buffer.Name}' is a {tensor.Buffer.GetType().Name}, not a host-memory buffer", nameof(tensor));
        return MemoryMarshal.Cast<byte, T>(host.Span(tensor.Offset, count * sizeof(T)));
    }

    /// <inheritdoc/>
    protected override void UploadCore(long offset, ReadOnlySpan<byte> source) => source.CopyTo(new Span<byte>(_data + offset, source.Length));

    /// <inheritdoc/>
    protected override void MemsetCore(long offset, long length, byte value) => NativeMemory.Fill(_data + offset, (nuint)length, value);

    /// <inheritdoc/>
    protected override void DownloadCore(long offset, Span<byte> destination) => new ReadOnlySpan<byte>(_data + offset, destination.Length).CopyTo(destination);

    /// <summary>Frees owned memory; an imported buffer registered nothing (the base class releases its lease).</summary>
    protected override void ReleaseCore()
    {
        if (Ownership == BufferOwnership.Owned) NativeMemory.AlignedFree(_data);
    }
}

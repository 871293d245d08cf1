using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Gpu;

/// <summary>
/// GPU buffers (CUDA and HIP). Owned: device memory from the runtime (cuMemAlloc, hipMalloc). Imported: the leased host
/// pages registered with the runtime (cuMemHostRegister DEVICEMAP, read-only where the device supports it; hipHostRegister
/// Mapped, read-only when the option asks) and read by the kernels through the device pointer the runtime returns (over
/// the bus on a discrete GPU, from the shared memory on an integrated one). Quantized tensors get a slide
/// (<see cref="LaunchGeometry.AllocSize"/>) because the matmul kernels read rows in whole 512-element chunks; the loader
/// decides where slides come from (docs/architecture.md#slides-and-zero-fill): an imported range's slide is already
/// zero in the mapping, so nothing here writes it (an imported buffer has no init path).
/// </summary>
internal sealed class GpuBufferProvider : IBufferProvider
{
    private readonly GpuDevice _device;

    internal GpuBufferProvider(GpuDevice device) => _device = device;

    public DeviceDescription Device => _device.Description;

    /// <summary>
    /// 32 B, GGUF's default alignment: what the kernels need is less (16-byte vector loads where the address allows,
    /// narrower loads otherwise; 2-byte block scales), and cuBLAS's fastest paths want 16 B. Asking for more (cuMemAlloc's
    /// 256 B) would make every tensor of an ordinary GGUF file fail the in-place test, so host import could never
    /// read weights from a file mapping.
    /// </summary>
    public long Alignment => 32;

    public long GetAllocSize(TensorInfo tensor) => LaunchGeometry.AllocSize(tensor);

    public BackendBuffer AllocateOwned(string name, long size) => new GpuOwnedBuffer(_device.Runtime, name, size);

    public unsafe HostImportResult TryImportHost(string name, IMappingLease lease)
    {
        var rt = _device.Runtime;
        var n = rt.Native;
        rt.MakeCurrent();
        void* host = (void*)lease.HostAddress;
        // Read-only registration is what lets the runtime register pages mapped PROT_READ (a file mapping); a plain one of
        // such pages fails. CUDA asks for it first wherever the device supports it and falls back to a plain registration
        // where it is refused. HIP asks for a plain one first (read-only was measured slower on gfx1151; the option
        // readonly_register turns it on) and retries read-only only where the plain one is refused: a read-only mapping.
        bool readOnly = rt.Facts.ReadOnlyHostRegister;
        int r = n.TryRegisterHost(host, lease.Length, readOnly);
        string how = n.RegistrationFlags(readOnly);
        if (r != 0 && readOnly)
        {
            int first = r;
            r = n.TryRegisterHost(host, lease.Length, readOnly: false);
            how = $"{n.RegistrationFlags(false)} (read-only refused: {n.ErrorName(first)})";
        }
        else if (r != 0 && rt.Facts.ReadOnlyHostRegisterFallback)
        {
            int first = r;
            r = n.TryRegisterHost(host, lease.Length, readOnly: true);
            how = $"{n.RegistrationFlags(true)} (plain registration refused: {n.ErrorName(first)}; read-only pages)";
        }
        if (r != 0)
            return HostImportResult.Refused($"{n.HostRegisterCall}({lease.Length} B at offset {lease.Offset} of {lease.Mapping.SourcePath}): {n.ErrorName(r)}");
        r = n.TryGetMappedPointer(host, out ulong devicePointer);
        if (r != 0)
        {
            n.UnregisterHostQuietly(host);
            return HostImportResult.Refused($"{n.HostRegisterCall} device pointer: {n.ErrorName(r)}");
        }
        return HostImportResult.Imported(new GpuImportedBuffer(rt, name, lease, devicePointer, how));
    }

    public (long Free, long Total) QueryMemory() => _device.Runtime.QueryMemory();
}

/// <summary>Common part of GPU buffers: the device pointer the kernels use.</summary>
internal abstract class GpuBuffer : BackendBuffer
{
    protected GpuBuffer(GpuRuntime runtime, string name, long size) : base(name, size) => Runtime = runtime;

    protected GpuBuffer(GpuRuntime runtime, string name, IMappingLease lease) : base(name, lease) => Runtime = runtime;

    public GpuRuntime Runtime { get; }

    /// <summary>Device address of byte 0 as the kernels see it.</summary>
    public abstract ulong DevicePointer { get; }

    public sealed override nint DeviceAddress => (nint)DevicePointer;
}

/// <summary>
/// Device memory. Writes go through the default stream (stream 0), which every queue's stream (created blocking) waits
/// for, so uploaded weights and zeroed slides are in place before any kernel reads them.
/// </summary>
internal sealed unsafe class GpuOwnedBuffer : GpuBuffer
{
    private readonly ulong _pointer;

    public GpuOwnedBuffer(GpuRuntime runtime, string name, long size) : base(runtime, name, size)
    {
        runtime.MakeCurrent();
        _pointer = runtime.Native.Allocate(Math.Max(size, 1), $"'{name}'");
        Tiled = new TiledWeightCopies(runtime);
    }

    public override ulong DevicePointer => _pointer;

    /// <summary>Tiled copies of Q4_0 matrices in this buffer (docs/gpu-kernels.md#tiled-q4_0-weights); every write here drops those it overlaps.</summary>
    public TiledWeightCopies Tiled { get; }

    protected override void InitTensorCore(TensorInfo tensor, long offset, long allocSize)
    {
        long slide = allocSize - tensor.ByteSize;
        if (slide <= 0) return;
        Runtime.EnterBufferWork();
        Tiled.Invalidate(offset + tensor.ByteSize, slide);
        Runtime.Native.MemsetAsync(_pointer + (ulong)(offset + tensor.ByteSize), 0, slide, 0, "slide");
    }

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source)
    {
        Runtime.EnterBufferWork();
        Tiled.Invalidate(offset, source.Length);
        int r;
        fixed (byte* p = source) r = Runtime.Native.TryCopyHostToDevice(_pointer + (ulong)offset, p, source.Length);
        // The driver refuses a source that lies partly in host pages registered for import (a copied tensor that shares a
        // page with an imported one, in the same file mapping): copy such a source through pinned memory instead.
        if (r == Runtime.Native.ErrorInvalidValue && source.Length > 0) UploadThroughPinned(offset, source);
        else if (r != 0) throw new GpuException($"{Runtime.Backend}: host-to-device copy ({source.Length} B into '{Name}')", r, Runtime.Native.ErrorName(r));
    }

    private void UploadThroughPinned(long offset, ReadOnlySpan<byte> source)
    {
        const int Chunk = 8 << 20;
        int size = Math.Min(Chunk, source.Length);
        void* bounce = Runtime.Native.AllocatePinned(size, "upload bounce buffer");
        try
        {
            for (int done = 0; done < source.Length; done += size)
            {
                int n = Math.Min(size, source.Length - done);
                source.Slice(done, n).CopyTo(new Span<byte>(bounce, n));
                Runtime.Native.CopyPinnedToDevice(_pointer + (ulong)(offset + done), bounce, n, "through pinned memory");
            }
        }
        finally
        {
            Runtime.Native.FreePinned(bounce);
        }
    }

    protected override void MemsetCore(long offset, long length, byte value)
    {
        Runtime.EnterBufferWork();
        Tiled.Invalidate(offset, length);
        Runtime.Native.MemsetAsync(_pointer + (ulong)offset, value, length, 0, "buffer fill");
    }

    protected override void DownloadCore(long offset, Span<byte> destination)
    {
        Runtime.EnterBufferWork();
        fixed (byte* p = destination) Runtime.Native.CopyDeviceToHost(p, _pointer + (ulong)offset, destination.Length);
    }

    protected override void CopyFromCore(BackendBuffer source, long sourceOffset, long destinationOffset, long length)
    {
        if (source is GpuBuffer gpu && gpu.Runtime == Runtime)
        {
            Runtime.EnterBufferWork();
            Tiled.Invalidate(destinationOffset, length);
            Runtime.Native.CopyDeviceToDevice(_pointer + (ulong)destinationOffset, gpu.DevicePointer + (ulong)sourceOffset, length);
        }
        else base.CopyFromCore(source, sourceOffset, destinationOffset, length);
    }

    protected override void ReleaseCore()
    {
        Runtime.EnterBufferWork();
        Tiled.Clear();
        Runtime.Native.Free(_pointer, $"'{Name}'");
    }
}

/// <summary>
/// Host pages of a mapping registered with the runtime. Never written (the base class refuses), and no init path: the
/// loader imports a range only where its slide already lies in zeros of the mapping. The device pointer is what
/// cuMemHostGetDevicePointer / hipHostGetDevicePointer returned. Release unregisters before the base class releases the lease.
/// </summary>
internal sealed unsafe class GpuImportedBuffer : GpuBuffer
{
    private readonly ulong _pointer;

    public GpuImportedBuffer(GpuRuntime runtime, string name, IMappingLease lease, ulong devicePointer, string registration)
        : base(runtime, name, lease)
    {
        _pointer = devicePointer;
        Registration = registration;
    }

    public override ulong DevicePointer => _pointer;

    /// <summary>How the pages were registered (flags), for diagnostics.</summary>
    public string Registration { get; }

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source) => throw new System.Diagnostics.UnreachableException();

    protected override void MemsetCore(long offset, long length, byte value) => throw new System.Diagnostics.UnreachableException();

    protected override void DownloadCore(long offset, Span<byte> destination)
        => new ReadOnlySpan<byte>((byte*)ImportLease!.HostAddress + offset, destination.Length).CopyTo(destination);

    protected override void ReleaseCore()
    {
        Runtime.EnterBufferWork();
        Runtime.Native.UnregisterHost((void*)ImportLease!.HostAddress);
    }
}

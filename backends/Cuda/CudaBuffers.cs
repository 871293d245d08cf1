using PluginEngine.Abstractions;
using PluginEngine.Backends.Cuda.Kernels;
using PluginEngine.Backends.Cuda.Native;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// CUDA buffers. Owned: cuMemAlloc device memory. Imported: the leased host pages registered with
/// cuMemHostRegister (read-only where the device supports it) and read by the kernels over the bus through
/// the device pointer the driver returns. Quantized tensors get a slide (<see cref="LaunchGeometry.AllocSize"/>)
/// because the matmul kernels read rows in whole 512-element chunks.
/// </summary>
public sealed class CudaBufferProvider : IBufferProvider
{
    private readonly CudaDevice _device;

    internal CudaBufferProvider(CudaDevice device) => _device = device;

    public DeviceDescription Device => _device.Description;

    /// <summary>
    /// 32 B, GGUF's default alignment: what the kernels need is less (16-byte vector loads where the address allows,
    /// narrower loads otherwise; 2-byte block scales), and cuBLAS's fastest paths want 16 B. Asking for more (cuMemAlloc's
    /// 256 B) would make every tensor of an ordinary GGUF file fail the in-place test, so host import could never
    /// read weights from a file mapping.
    /// </summary>
    public long Alignment => 32;

    public long GetAllocSize(TensorInfo tensor) => LaunchGeometry.AllocSize(tensor);

    public BackendBuffer AllocateOwned(string name, long size) => new CudaOwnedBuffer(_device.Runtime, name, size);

    public unsafe HostImportResult TryImportHost(string name, IMappingLease lease)
    {
        var rt = _device.Runtime;
        var d = rt.Driver;
        rt.MakeCurrent();
        void* host = (void*)lease.HostAddress;
        // READ_ONLY lets the driver register pages mapped PROT_READ (a file mapping); without it registration of
        // such pages fails. Fall back to a plain registration where the flag is unsupported or refused.
        uint flags = CudaDriver.HostRegisterDeviceMap | (rt.ReadOnlyHostRegister ? CudaDriver.HostRegisterReadOnly : 0);
        int r = d.cuMemHostRegister(host, (nuint)lease.Length, flags);
        string how = (flags & CudaDriver.HostRegisterReadOnly) != 0 ? "DEVICEMAP|READ_ONLY" : "DEVICEMAP";
        if (r != 0 && (flags & CudaDriver.HostRegisterReadOnly) != 0)
        {
            int first = r;
            r = d.cuMemHostRegister(host, (nuint)lease.Length, CudaDriver.HostRegisterDeviceMap);
            how = $"DEVICEMAP (READ_ONLY refused: {d.ErrorName(first)})";
        }
        if (r != 0)
            return HostImportResult.Refused($"cuMemHostRegister({lease.Length} B at offset {lease.Offset} of {lease.Mapping.SourcePath}): {d.ErrorName(r)}");
        ulong devicePointer;
        r = d.cuMemHostGetDevicePointer(&devicePointer, host, 0);
        if (r != 0)
        {
            d.cuMemHostUnregister(host);
            return HostImportResult.Refused($"cuMemHostGetDevicePointer: {d.ErrorName(r)}");
        }
        return HostImportResult.Imported(new CudaImportedBuffer(rt, name, lease, devicePointer, how));
    }

    public (long Free, long Total) QueryMemory() => _device.Runtime.QueryMemory();
}

/// <summary>Common part of CUDA buffers: the device pointer the kernels use.</summary>
internal abstract class CudaBuffer : BackendBuffer
{
    protected CudaBuffer(CudaRuntime runtime, string name, long size) : base(name, size) => Runtime = runtime;

    protected CudaBuffer(CudaRuntime runtime, string name, IMappingLease lease) : base(name, lease) => Runtime = runtime;

    public CudaRuntime Runtime { get; }

    /// <summary>Device address of byte 0 as the kernels see it.</summary>
    public abstract ulong DevicePointer { get; }

    public sealed override nint DeviceAddress => (nint)DevicePointer;
}

/// <summary>
/// Device memory from cuMemAlloc. Writes go through the legacy default stream (stream 0), which every queue's
/// stream (created blocking) waits for, so uploaded weights and zeroed slides are in place before any kernel reads them.
/// </summary>
internal sealed unsafe class CudaOwnedBuffer : CudaBuffer
{
    private readonly ulong _pointer;

    public CudaOwnedBuffer(CudaRuntime runtime, string name, long size) : base(runtime, name, size)
    {
        runtime.MakeCurrent();
        ulong p;
        int r = runtime.Driver.cuMemAlloc(&p, (nuint)Math.Max(size, 1));
        if (r != 0) throw new CudaException($"cuMemAlloc({size} B for '{name}')", r, runtime.Driver.ErrorName(r));
        _pointer = p;
    }

    public override ulong DevicePointer => _pointer;

    protected override void InitTensorCore(TensorInfo tensor, long offset, long allocSize)
    {
        long slide = allocSize - tensor.ByteSize;
        if (slide <= 0) return;
        Runtime.EnterBufferWork();
        Runtime.Driver.Check(Runtime.Driver.cuMemsetD8Async(_pointer + (ulong)(offset + tensor.ByteSize), 0, (nuint)slide, 0), "cuMemsetD8Async (slide)");
    }

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source)
    {
        Runtime.EnterBufferWork();
        int r;
        fixed (byte* p = source) r = Runtime.Driver.cuMemcpyHtoD(_pointer + (ulong)offset, p, (nuint)source.Length);
        // The driver refuses a source that lies partly in host pages registered for import (a copied tensor that shares a
        // page with an imported one, in the same file mapping): copy such a source through pinned memory instead.
        if (r == CudaDriver.ErrorInvalidValue && source.Length > 0) UploadThroughPinned(offset, source);
        else Runtime.Driver.Check(r, "cuMemcpyHtoD");
    }

    private void UploadThroughPinned(long offset, ReadOnlySpan<byte> source)
    {
        const int Chunk = 8 << 20;
        int size = Math.Min(Chunk, source.Length);
        void* bounce;
        Runtime.Driver.Check(Runtime.Driver.cuMemAllocHost(&bounce, (nuint)size), $"cuMemAllocHost ({size} B upload bounce buffer)");
        try
        {
            for (int done = 0; done < source.Length; done += size)
            {
                int n = Math.Min(size, source.Length - done);
                source.Slice(done, n).CopyTo(new Span<byte>(bounce, n));
                Runtime.Driver.Check(Runtime.Driver.cuMemcpyHtoD(_pointer + (ulong)(offset + done), bounce, (nuint)n), "cuMemcpyHtoD (through pinned memory)");
            }
        }
        finally
        {
            Runtime.Driver.cuMemFreeHost(bounce);
        }
    }

    protected override void MemsetCore(long offset, long length, byte value)
    {
        Runtime.EnterBufferWork();
        Runtime.Driver.Check(Runtime.Driver.cuMemsetD8Async(_pointer + (ulong)offset, value, (nuint)length, 0), "cuMemsetD8Async");
    }

    protected override void DownloadCore(long offset, Span<byte> destination)
    {
        Runtime.EnterBufferWork();
        fixed (byte* p = destination) Runtime.Driver.Check(Runtime.Driver.cuMemcpyDtoH(p, _pointer + (ulong)offset, (nuint)destination.Length), "cuMemcpyDtoH");
    }

    protected override void CopyFromCore(BackendBuffer source, long sourceOffset, long destinationOffset, long length)
    {
        if (source is CudaBuffer cuda && cuda.Runtime == Runtime)
        {
            Runtime.EnterBufferWork();
            Runtime.Driver.Check(Runtime.Driver.cuMemcpyDtoD(_pointer + (ulong)destinationOffset, cuda.DevicePointer + (ulong)sourceOffset, (nuint)length), "cuMemcpyDtoD");
        }
        else base.CopyFromCore(source, sourceOffset, destinationOffset, length);
    }

    protected override void ReleaseCore()
    {
        Runtime.EnterBufferWork();
        Runtime.Driver.Check(Runtime.Driver.cuMemFree(_pointer), "cuMemFree");
    }
}

/// <summary>
/// Host pages of a mapping registered with the driver. Never written (the base class refuses); the device pointer
/// is what cuMemHostGetDevicePointer returned. Release unregisters before the base class releases the lease.
/// </summary>
internal sealed unsafe class CudaImportedBuffer : CudaBuffer
{
    private readonly ulong _pointer;

    public CudaImportedBuffer(CudaRuntime runtime, string name, IMappingLease lease, ulong devicePointer, string registration)
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
        Runtime.Driver.Check(Runtime.Driver.cuMemHostUnregister((void*)ImportLease!.HostAddress), "cuMemHostUnregister");
    }
}

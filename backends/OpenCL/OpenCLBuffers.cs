using PluginEngine.Abstractions;
using Silk.NET.OpenCL;

namespace PluginEngine.Backends.OpenCL;

/// <summary>
/// OpenCL buffers. Owned: <c>clCreateBuffer(CL_MEM_READ_WRITE)</c>. Imported: <c>CL_MEM_READ_ONLY | CL_MEM_USE_HOST_PTR</c>
/// over the leased, page-aligned host range, never written. The matmul kernels walk quantized rows in whole chunks
/// of <see cref="RowPaddingElements"/> elements, so a quantized tensor whose row length is not a multiple of it
/// declares a slide (<see cref="TensorPadding.SlideBytes"/>) that must read as zero.
/// </summary>
public sealed class OpenCLBufferProvider : IBufferProvider
{
    /// <summary>Row chunk the quantized matmul kernels decode (ROW_PAD in Kernels/ops.cl).</summary>
    public const int RowPaddingElements = 512;

    private readonly OpenCLDevice _device;
    private long _ownedBytes;

    internal OpenCLBufferProvider(OpenCLDevice device) => _device = device;

    public DeviceDescription Device => _device.Description;

    public long GetAllocSize(TensorInfo tensor) => tensor.ByteSize + TensorPadding.SlideBytes(tensor, RowPaddingElements);

    public BackendBuffer AllocateOwned(string name, long size)
    {
        if (size > _device.MaxAllocation)
            throw new OpenCLException($"opencl: buffer '{name}' of {size} B exceeds the device's largest allocation ({_device.MaxAllocation} B)");
        var buffer = new OpenCLOwnedBuffer(_device, name, size, this);
        Interlocked.Add(ref _ownedBytes, size);
        return buffer;
    }

    public unsafe HostImportResult TryImportHost(string name, IMappingLease lease)
    {
        if (lease.Length == 0) return HostImportResult.Refused("opencl: empty import range");
        if (lease.Length > _device.MaxAllocation)
            return HostImportResult.Refused($"opencl: import of {lease.Length} B exceeds the device's largest allocation ({_device.MaxAllocation} B)");
        int err;
        nint mem = _device.Api.CreateBuffer(_device.Context, MemFlags.ReadOnly | MemFlags.UseHostPtr, (nuint)lease.Length, (void*)lease.HostAddress, &err);
        if (err != 0 || mem == 0)
            return HostImportResult.Refused($"opencl: clCreateBuffer(CL_MEM_USE_HOST_PTR) over {lease.Length} B failed with {OpenCLRuntime.ErrorName(err)} ({err})");
        return HostImportResult.Imported(new OpenCLImportedBuffer(_device, name, lease, mem));
    }

    public (long Free, long Total) QueryMemory() => (Math.Max(0, Device.TotalMemory - Interlocked.Read(ref _ownedBytes)), Device.TotalMemory);

    internal void Released(long size) => Interlocked.Add(ref _ownedBytes, -size);
}

/// <summary>A buffer of the OpenCL backend: a cl_mem handle on its device's queue.</summary>
public abstract class OpenCLBuffer : BackendBuffer
{
    private protected OpenCLBuffer(OpenCLDevice device, string name, long size) : base(name, size) => Device = device;

    private protected OpenCLBuffer(OpenCLDevice device, string name, IMappingLease lease) : base(name, lease) => Device = device;

    internal OpenCLDevice Device { get; }

    /// <summary>The cl_mem handle.</summary>
    internal abstract nint Memory { get; }

    /// <summary>0: kernels receive the cl_mem handle plus a byte offset, never an address.</summary>
    public override nint DeviceAddress => 0;

    protected override unsafe void DownloadCore(long offset, Span<byte> destination)
    {
        if (destination.IsEmpty) return;
        fixed (byte* p = destination)
            OpenCLRuntime.Check(Device.Api.EnqueueReadBuffer(Device.Queue, Memory, true, (nuint)offset, (nuint)destination.Length, p, 0, null, null),
                $"clEnqueueReadBuffer of {destination.Length} B at {offset} from '{Name}'");
    }
}

/// <summary>Device memory owned by the backend. Writes go through the device queue, ordered with every op.</summary>
internal sealed unsafe class OpenCLOwnedBuffer : OpenCLBuffer
{
    private readonly OpenCLBufferProvider _provider;
    private readonly nint _memory;

    public OpenCLOwnedBuffer(OpenCLDevice device, string name, long size, OpenCLBufferProvider provider) : base(device, name, size)
    {
        _provider = provider;
        int err;
        // clCreateBuffer refuses size 0; a one-byte buffer keeps empty tensors valid handles.
        _memory = device.Api.CreateBuffer(device.Context, MemFlags.ReadWrite, (nuint)Math.Max(size, 1), null, &err);
        OpenCLRuntime.Check(err, $"clCreateBuffer of {size} B for '{name}'");
    }

    internal override nint Memory => _memory;

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source)
    {
        if (source.IsEmpty) return;
        // Blocking: the caller may reuse the span as soon as this returns.
        fixed (byte* p = source)
            OpenCLRuntime.Check(Device.Api.EnqueueWriteBuffer(Device.Queue, _memory, true, (nuint)offset, (nuint)source.Length, p, 0, null, null),
                $"clEnqueueWriteBuffer of {source.Length} B at {offset} into '{Name}'");
    }

    /// <summary>clEnqueueFillBuffer (also how <see cref="BackendBuffer.InitTensor"/> zeroes a slide): ordered on the device queue.</summary>
    protected override void MemsetCore(long offset, long length, byte value)
        => OpenCLRuntime.Check(Device.Api.EnqueueFillBuffer(Device.Queue, _memory, &value, 1, (nuint)offset, (nuint)length, 0, null, null),
            $"clEnqueueFillBuffer of {length} B at {offset} in '{Name}'");

    protected override void CopyFromCore(BackendBuffer source, long sourceOffset, long destinationOffset, long length)
    {
        if (source is OpenCLBuffer cl && cl.Device == Device)
            OpenCLRuntime.Check(Device.Api.EnqueueCopyBuffer(Device.Queue, cl.Memory, _memory, (nuint)sourceOffset, (nuint)destinationOffset, (nuint)length, 0, null, null),
                $"clEnqueueCopyBuffer of {length} B into '{Name}'");
        else
            base.CopyFromCore(source, sourceOffset, destinationOffset, length);
    }

    protected override void ReleaseCore()
    {
        // clReleaseMemObject defers the free until enqueued commands using the buffer have finished.
        Device.Api.ReleaseMemObject(_memory);
        _provider.Released(Size);
    }
}

/// <summary>Host pages of a mapping wrapped with CL_MEM_USE_HOST_PTR (read-only). Never written: the base class refuses every write.</summary>
internal sealed class OpenCLImportedBuffer(OpenCLDevice device, string name, IMappingLease lease, nint memory) : OpenCLBuffer(device, name, lease)
{
    internal override nint Memory => memory;

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source) => throw new System.Diagnostics.UnreachableException();

    protected override void MemsetCore(long offset, long length, byte value) => throw new System.Diagnostics.UnreachableException();

    protected override void ReleaseCore()
    {
        // The device may still be reading these pages: drain the queue before the lease (and with it the mapping) goes.
        Device.Api.Finish(Device.Queue);
        Device.Api.ReleaseMemObject(memory);
    }
}

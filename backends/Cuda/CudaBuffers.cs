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
/// Q4_0/Q8_0 tensors placed with InitTensor are held in the device row layout once written whole (<see cref="Packing"/>);
/// downloads and writes see GGUF's bytes all the same.
/// </summary>
internal sealed unsafe class CudaOwnedBuffer : CudaBuffer, PackedRegions.IConverter
{
    private readonly ulong _pointer;

    public CudaOwnedBuffer(CudaRuntime runtime, string name, long size) : base(runtime, name, size)
    {
        runtime.MakeCurrent();
        ulong p;
        int r = runtime.Driver.cuMemAlloc(&p, (nuint)Math.Max(size, 1));
        if (r != 0) throw new CudaException($"cuMemAlloc({size} B for '{name}')", r, runtime.Driver.ErrorName(r));
        _pointer = p;
        Packing = runtime.Options.PackRows ? new PackedRegions(this) : null;
    }

    public override ulong DevicePointer => _pointer;

    /// <summary>The tensors held in the device row layout; null when the <c>layout</c> option is <c>gguf</c>.</summary>
    public PackedRegions? Packing { get; }

    protected override void InitTensorCore(TensorInfo tensor, long offset, long allocSize)
    {
        Packing?.Register(tensor, offset);
        long slide = allocSize - tensor.ByteSize;
        if (slide <= 0) return;
        Runtime.EnterBufferWork();
        Runtime.Driver.Check(Runtime.Driver.cuMemsetD8Async(_pointer + (ulong)(offset + tensor.ByteSize), 0, (nuint)slide, 0), "cuMemsetD8Async (slide)");
    }

    protected override void UploadCore(long offset, ReadOnlySpan<byte> source)
    {
        Packing?.BeforeWrite(offset, source.Length);
        UploadBytes(offset, source);
        Packing?.AfterWrite(offset, source.Length);
    }

    private void UploadBytes(long offset, ReadOnlySpan<byte> source)
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
        Packing?.BeforeWrite(offset, length);
        Runtime.EnterBufferWork();
        Runtime.Driver.Check(Runtime.Driver.cuMemsetD8Async(_pointer + (ulong)offset, value, (nuint)length, 0), "cuMemsetD8Async");
        Packing?.AfterWrite(offset, length);
    }

    protected override void DownloadCore(long offset, Span<byte> destination)
    {
        DownloadBytes(offset, destination);
        if (Packing is null) return;
        // Packed tensors in the range: convert their rows that the range touches back to GGUF's layout.
        foreach (var region in Packing.PackedOverlapping(offset, destination.Length))
        {
            long from = Math.Max(offset, region.Start), to = Math.Min(offset + destination.Length, region.End);
            long firstRow = (from - region.Start) / region.RowBytes, endRow = (to - region.Start + region.RowBytes - 1) / region.RowBytes;
            long rowsAt = region.Start + firstRow * region.RowBytes;
            var packed = new byte[(endRow - firstRow) * region.RowBytes];
            var gguf = new byte[packed.Length];
            DownloadBytes(rowsAt, packed);
            PackedRows.Convert(packed, gguf, region.BlocksPerRow, region.QuantBytes, toDevice: false);
            gguf.AsSpan((int)(from - rowsAt), (int)(to - from)).CopyTo(destination.Slice((int)(from - offset)));
        }
    }

    private void DownloadBytes(long offset, Span<byte> destination)
    {
        Runtime.EnterBufferWork();
        fixed (byte* p = destination) Runtime.Driver.Check(Runtime.Driver.cuMemcpyDtoH(p, _pointer + (ulong)offset, (nuint)destination.Length), "cuMemcpyDtoH");
    }

    /// <summary>Rewrites a packed region's rows in place with the pack_rows kernel, through a temporary device copy.</summary>
    void PackedRegions.IConverter.ConvertInPlace(PackedRegions.Region region, bool toDevice)
    {
        var d = Runtime.Driver;
        Runtime.EnterBufferWork();
        ulong temp;
        d.Check(d.cuMemAlloc(&temp, (nuint)region.Bytes), $"cuMemAlloc ({region.Bytes} B to repack a tensor of '{Name}')");
        try
        {
            ulong src = _pointer + (ulong)region.Start;
            long rows = region.Rows;
            int blocks = region.BlocksPerRow, quantBytes = region.QuantBytes, direction = toDevice ? 1 : 0;
            void** args = stackalloc void*[] { &src, &temp, &rows, &blocks, &quantBytes, &direction };
            long threads = rows * blocks;
            const int Block = 256;
            uint grid = checked((uint)((threads + Block - 1) / Block));
            int r = d.cuLaunchKernel(Runtime.Function("pack_rows"), grid, 1, 1, Block, 1, 1, 0, 0, args, null);
            if (r != 0) throw new CudaException($"cuLaunchKernel(pack_rows, {rows} rows of '{Name}')", r, d.ErrorName(r));
            d.Check(d.cuMemcpyDtoD(src, temp, (nuint)region.Bytes), "cuMemcpyDtoD (repacked rows)");
            d.Check(d.cuStreamSynchronize(0), "cuStreamSynchronize (repack)");
        }
        finally
        {
            d.cuMemFree(temp);
        }
    }

    protected override void CopyFromCore(BackendBuffer source, long sourceOffset, long destinationOffset, long length)
    {
        // Packed tensors on either side: through the host, where downloads and uploads see GGUF's bytes.
        bool packedSource = source is CudaOwnedBuffer { Packing: { } p } && p.PackedOverlapping(sourceOffset, length).Count > 0;
        bool trackedDestination = Packing is not null && Packing.Tracks(destinationOffset, length);
        if (source is CudaBuffer cuda && cuda.Runtime == Runtime && !packedSource && !trackedDestination)
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

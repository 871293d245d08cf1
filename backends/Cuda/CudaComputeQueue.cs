using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Cuda.Kernels;
using PluginEngine.Backends.Cuda.Native;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// The op queue of one CUDA stream. Every op is a kernel launch (or an async copy) on the stream; the host waits
/// only in <see cref="Download"/> and <see cref="Synchronize"/>. Host data the ops need (uploads, row ids) is
/// copied into a pinned staging arena first, so the caller's span can be reused at once; the arena is recycled
/// whenever the stream is known idle, and the queue waits for the stream only when the arena runs out.
/// </summary>
internal sealed unsafe class CudaComputeQueue : IComputeQueue
{
    private const long InitialStagingBytes = 1 << 20;
    private const long StagingAlignment = 256;

    private readonly CudaDevice _device;
    private readonly CudaRuntime _rt;
    private readonly CudaDriver _d;
    private readonly nint _stream;
    private readonly nint[] _getRows = new nint[8], _matmul1 = new nint[8], _matmulN = new nint[8];
    private readonly nint _rmsNorm, _rope, _attentionF32, _attentionF16, _siluMul, _add, _addBias, _copyF32, _convertF16;

    private byte* _staging;
    private long _stagingCapacity, _stagingUsed;
    private ulong _rowIds;
    private long _rowIdsCapacity;
    private bool _disposed;

    public CudaComputeQueue(CudaDevice device)
    {
        _device = device;
        _rt = device.Runtime;
        _d = _rt.Driver;
        _rt.MakeCurrent();
        nint stream;
        // Flags 0 = a blocking stream: it waits for work on the legacy default stream, where buffer uploads and
        // slide memsets are issued.
        _d.Check(_d.cuStreamCreate(&stream, 0), "cuStreamCreate");
        _stream = stream;
        foreach (var type in KernelSource.WeightTypes)
        {
            int slot = KernelSlot(type);
            string s = KernelSource.WeightSuffix(type)!;
            _getRows[slot] = _rt.Function($"get_rows_{s}");
            _matmul1[slot] = _rt.Function($"matmul_{s}_t1");
            _matmulN[slot] = _rt.Function($"matmul_{s}_tn");
        }
        _rmsNorm = _rt.Function("rms_norm");
        _rope = _rt.Function("rope");
        _attentionF32 = _rt.Function("attention_f32");
        _attentionF16 = _rt.Function("attention_f16");
        _siluMul = _rt.Function("silu_mul");
        _add = _rt.Function("add");
        _addBias = _rt.Function("add_bias");
        _copyF32 = _rt.Function("copy_f32");
        _convertF16 = _rt.Function("convert_f32_f16");
        GrowStaging(InitialStagingBytes);
    }

    public IBackendDevice Device => _device;

    public bool Supports(ComputeOp op, GgmlType type) => op switch
    {
        ComputeOp.MatMul or ComputeOp.GetRows => KernelSource.WeightSuffix(type) is not null,
        ComputeOp.Attention or ComputeOp.Convert => type is GgmlType.F32 or GgmlType.F16,
        // Not implemented yet (no GPU to test a kernel on): the core runs RoPE with frequency factors on the CPU.
        ComputeOp.RopeFrequencyFactors => false,
        _ => type == GgmlType.F32,
    };

    public void GetRows(DeviceTensor table, long rowLength, ReadOnlySpan<int> rows, DeviceTensor dst)
    {
        if (rows.IsEmpty) return;
        int slot = KernelSlot(table.Type);
        _rt.MakeCurrent();
        long bytes = (long)rows.Length * sizeof(int);
        if (_rowIdsCapacity < bytes) GrowRowIds(bytes);
        byte* staged = Stage(MemoryMarshal.AsBytes(rows));
        _d.Check(_d.cuMemcpyHtoDAsync(_rowIds, staged, (nuint)bytes, _stream), "cuMemcpyHtoDAsync (row ids)");
        ulong t = Ptr(table), ids = _rowIds, y = Ptr(dst);
        long rowBytes = GgmlTypes.RowSize(table.Type, rowLength), length = rowLength;
        void** args = stackalloc void*[] { &t, &rowBytes, &ids, &y, &length };
        LaunchKernel(_getRows[slot], LaunchGeometry.GetRows(rows.Length, rowLength), args, "get_rows");
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor y, int rows, int n, float eps)
    {
        if (rows <= 0) return;
        _rt.MakeCurrent();
        ulong px = Ptr(x), pw = Ptr(weight), py = Ptr(y);
        void** args = stackalloc void*[] { &px, &pw, &py, &n, &eps };
        LaunchKernel(_rmsNorm, LaunchGeometry.RmsNorm(rows), args, "rms_norm");
    }

    public void MatMul(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens)
    {
        if (tokens <= 0 || wRows <= 0) return;
        int slot = KernelSlot(w.Type);
        _rt.MakeCurrent();
        ulong pw = Ptr(w), px = Ptr(x), py = Ptr(y);
        long rowBytes = GgmlTypes.RowSize(w.Type, wCols), rows = wRows;
        int cols = checked((int)wCols);
        void** args = stackalloc void*[] { &pw, &rowBytes, &rows, &cols, &px, &py, &tokens };
        var kernel = LaunchGeometry.UsesBatchedMatMul(tokens) ? _matmulN[slot] : _matmul1[slot];
        LaunchKernel(kernel, LaunchGeometry.MatMul(wRows, tokens), args, "matmul");
    }

    public void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope)
    {
        if (rope.Dims <= 0 || rope.Dims > headSize || rope.Dims % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(rope), $"cuda: RoPE dims {rope.Dims} must be even and in 1..{headSize}");
        long pairs = (long)tokens * heads * (rope.Dims / 2);
        if (pairs == 0) return;
        _rt.MakeCurrent();
        ulong px = Ptr(x);
        int dims = rope.Dims, neox = rope.Mode == RopeMode.NeoX ? 1 : 0;
        float freqBase = rope.FrequencyBase, freqScale = rope.FrequencyScale;
        void** args = stackalloc void*[] { &px, &tokens, &heads, &headSize, &dims, &firstPosition, &freqBase, &freqScale, &neox };
        LaunchKernel(_rope, LaunchGeometry.Elementwise(pairs), args, "rope");
    }

    public void Attention(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output, AttentionParams p)
    {
        if (kCache.Type != vCache.Type) throw new ArgumentException($"cuda: K cache is {kCache.Type}, V cache is {vCache.Type}; they must match");
        if (kCache.Type is not (GgmlType.F32 or GgmlType.F16)) throw new NotSupportedException($"cuda: attention over a {kCache.Type} cache");
        if (p.HeadSize <= 0 || p.HeadSize > LaunchGeometry.AttentionMaxHeadSize)
            throw new NotSupportedException($"cuda: attention head size {p.HeadSize} (1..{LaunchGeometry.AttentionMaxHeadSize} supported)");
        if (p.KvHeads <= 0 || p.Heads % p.KvHeads != 0) throw new ArgumentException($"cuda: {p.Heads} heads are not a multiple of {p.KvHeads} KV heads");
        if (p.Tokens <= 0) return;
        _rt.MakeCurrent();
        ulong pq = Ptr(q), pk = Ptr(kCache), pv = Ptr(vCache), po = Ptr(output);
        int first = p.FirstPosition, heads = p.Heads, kvHeads = p.KvHeads, headSize = p.HeadSize;
        float scale = p.Scale;
        void** args = stackalloc void*[] { &pq, &pk, &pv, &po, &first, &heads, &kvHeads, &headSize, &scale };
        LaunchKernel(kCache.Type == GgmlType.F16 ? _attentionF16 : _attentionF32, LaunchGeometry.Attention(p.Heads, p.Tokens), args, "attention");
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n)
    {
        if (n <= 0) return;
        _rt.MakeCurrent();
        ulong pg = Ptr(gate), pu = Ptr(up), py = Ptr(y);
        void** args = stackalloc void*[] { &pg, &pu, &py, &n };
        LaunchKernel(_siluMul, LaunchGeometry.Elementwise(n), args, "silu_mul");
    }

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor y, long n)
    {
        if (n <= 0) return;
        _rt.MakeCurrent();
        ulong pa = Ptr(a), pb = Ptr(b), py = Ptr(y);
        void** args = stackalloc void*[] { &pa, &pb, &py, &n };
        LaunchKernel(_add, LaunchGeometry.Elementwise(n), args, "add");
    }

    public void AddBias(DeviceTensor x, DeviceTensor bias, int rows, int n)
    {
        long total = (long)rows * n;
        if (total <= 0) return;
        _rt.MakeCurrent();
        ulong px = Ptr(x), pb = Ptr(bias);
        void** args = stackalloc void*[] { &px, &pb, &total, &n };
        LaunchKernel(_addBias, LaunchGeometry.Elementwise(total), args, "add_bias");
    }

    public void Convert(DeviceTensor src, DeviceTensor dst, long n)
    {
        if (n <= 0) return;
        var kernel = dst.Type switch
        {
            GgmlType.F32 => _copyF32,
            GgmlType.F16 => _convertF16,
            _ => throw new NotSupportedException($"cuda: Convert to {dst.Type}"),
        };
        _rt.MakeCurrent();
        ulong ps = Ptr(src), pd = Ptr(dst);
        void** args = stackalloc void*[] { &ps, &pd, &n };
        LaunchKernel(kernel, LaunchGeometry.Elementwise(n), args, "convert");
    }

    public void Upload(ReadOnlySpan<float> source, DeviceTensor dst)
    {
        if (source.IsEmpty) return;
        _rt.MakeCurrent();
        ulong pd = Ptr(dst);
        byte* staged = Stage(MemoryMarshal.AsBytes(source));
        _d.Check(_d.cuMemcpyHtoDAsync(pd, staged, (nuint)(source.Length * sizeof(float)), _stream), "cuMemcpyHtoDAsync");
    }

    public void Download(DeviceTensor src, Span<float> destination)
    {
        _rt.MakeCurrent();
        long bytes = (long)destination.Length * sizeof(float);
        ulong ps = Ptr(src);
        if (bytes > _stagingCapacity)
        {
            Synchronize();
            GrowStaging(bytes);
        }
        // Stream order puts this copy after every queued upload that still reads the arena, so the arena's start can be reused.
        if (bytes > 0) _d.Check(_d.cuMemcpyDtoHAsync(_staging, ps, (nuint)bytes, _stream), "cuMemcpyDtoHAsync");
        Synchronize();
        new ReadOnlySpan<byte>(_staging, (int)bytes).CopyTo(MemoryMarshal.AsBytes(destination));
    }

    public void Synchronize()
    {
        _rt.MakeCurrent();
        _d.Check(_d.cuStreamSynchronize(_stream), "cuStreamSynchronize");
        _stagingUsed = 0; // the stream is idle: nothing reads the arena any more
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _rt.MakeCurrent();
        _d.cuStreamSynchronize(_stream);
        if (_rowIds != 0) _d.cuMemFree(_rowIds);
        if (_staging != null) _d.cuMemFreeHost(_staging);
        _d.cuStreamDestroy(_stream);
    }

    /// <summary>Index of a weight type's kernels in the lookup tables; throws for types without kernels.</summary>
    private static int KernelSlot(GgmlType type) => type switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.BF16 => 2,
        GgmlType.Q8_0 => 3,
        GgmlType.Q4_0 => 4,
        GgmlType.Q4_K => 5,
        GgmlType.Q5_K => 6,
        GgmlType.Q6_K => 7,
        _ => throw new NotSupportedException($"cuda: no kernel reads {type} weights (Supports() says so)"),
    };

    /// <summary>Device address of a tensor; the buffer must belong to this device.</summary>
    private ulong Ptr(DeviceTensor t)
    {
        if (t.Buffer is not CudaBuffer b || b.Runtime != _rt)
            throw new ArgumentException($"cuda: buffer '{t.Buffer.Name}' does not belong to {_rt.Name} ({_rt.PciBusId})");
        if (t.Offset < 0 || t.Offset > b.Size) throw new ArgumentOutOfRangeException(nameof(t), $"cuda: offset {t.Offset} is outside buffer '{b.Name}' ({b.Size} B)");
        return b.DevicePointer + (ulong)t.Offset;
    }

    private void LaunchKernel(nint function, Launch launch, void** args, string what)
    {
        int r = _d.cuLaunchKernel(function, launch.GridX, launch.GridY, 1, launch.BlockX, 1, 1, 0, _stream, args, null);
        if (r != 0) throw new CudaException($"cuLaunchKernel({what}, grid {launch.GridX}x{launch.GridY}, block {launch.BlockX})", r, _d.ErrorName(r));
    }

    /// <summary>Copies <paramref name="data"/> into the pinned arena and returns where; waits for the stream only when the arena is full.</summary>
    private byte* Stage(ReadOnlySpan<byte> data)
    {
        long need = TensorPadding.AlignUp(data.Length, StagingAlignment);
        if (_stagingUsed + need > _stagingCapacity)
        {
            Synchronize(); // queued copies may still read the arena
            if (need > _stagingCapacity) GrowStaging(Math.Max(need, 2 * _stagingCapacity));
        }
        byte* at = _staging + _stagingUsed;
        data.CopyTo(new Span<byte>(at, data.Length));
        _stagingUsed += need;
        return at;
    }

    /// <summary>Replaces the arena with a larger one; callers ensure the stream is idle.</summary>
    private void GrowStaging(long bytes)
    {
        if (_staging != null) _d.Check(_d.cuMemFreeHost(_staging), "cuMemFreeHost");
        _staging = null;
        void* p;
        _d.Check(_d.cuMemAllocHost(&p, (nuint)bytes), $"cuMemAllocHost({bytes} B staging)");
        _staging = (byte*)p;
        _stagingCapacity = bytes;
        _stagingUsed = 0;
    }

    private void GrowRowIds(long bytes)
    {
        if (_rowIds != 0)
        {
            Synchronize(); // a queued get_rows may still read the old ids
            _d.Check(_d.cuMemFree(_rowIds), "cuMemFree");
            _rowIds = 0;
        }
        long capacity = Math.Max(bytes, 4096);
        ulong p;
        _d.Check(_d.cuMemAlloc(&p, (nuint)capacity), "cuMemAlloc (row ids)");
        _rowIds = p;
        _rowIdsCapacity = capacity;
    }
}

using PluginEngine.Abstractions;
using Silk.NET.OpenCL;

namespace PluginEngine.Backends.OpenCL;

/// <summary>
/// Ops on the device's in-order command queue. Every op is enqueued and returns; the host waits only in
/// <see cref="Download"/> (a blocking read, ordered after every op) and <see cref="Synchronize"/> (clFinish).
/// Kernel objects are this queue's own (cl_kernel argument state is not thread-safe); kernel arguments are set from
/// locals, so steady-state ops allocate nothing on the managed heap.
/// </summary>
internal sealed unsafe class OpenCLComputeQueue : IComputeQueue
{
    private const int WorkGroup = 64;       // WG in Kernels/ops.cl
    private const int MatMulTile = 8;       // MM_TILE in Kernels/ops.cl
    private const int Sub = 32;             // elements decoded per work-item step

    private static readonly GgmlType[] WeightTypes = [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];

    private readonly OpenCLDevice _device;
    private readonly CL _cl;
    private readonly nint _queue;
    private readonly List<nint> _kernels = [];
    private readonly Dictionary<GgmlType, (nint Mv, nint Mm, nint GetRows)> _weightKernels = [];
    private readonly nint _rmsNorm, _rope, _ropeFactors, _attentionF32, _attentionF16, _attentionCpuF32, _attentionCpuF16, _siluMul, _add, _addBias, _convertF16;
    private nint _scratch;
    private nint _ropeTable;
    private (int Dims, float Base, float Scale) _ropeKey;
    private long _scratchBytes;
    private int _disposed;

    public OpenCLComputeQueue(OpenCLDevice device)
    {
        _device = device;
        _cl = device.Api;
        _queue = device.Queue;
        try
        {
            foreach (var type in WeightTypes)
            {
                string suffix = type.ToString().ToLowerInvariant();
                string shape = device.CpuShapedKernels ? "cpu_" : "";
                _weightKernels[type] = (Kernel($"mul_mv_{shape}{suffix}"), Kernel($"mul_mm_{shape}{suffix}"), Kernel($"get_rows_{suffix}"));
            }
            _rmsNorm = Kernel("rms_norm");
            _rope = Kernel("rope");
            _ropeFactors = Kernel("rope_factors");
            _attentionF32 = Kernel("attention_f32");
            _attentionF16 = Kernel("attention_f16");
            if (device.CpuShapedKernels)
            {
                _attentionCpuF32 = Kernel("attention_cpu_f32");
                _attentionCpuF16 = Kernel("attention_cpu_f16");
            }
            _siluMul = Kernel("silu_mul");
            _add = Kernel("add");
            _addBias = Kernel("add_bias");
            _convertF16 = Kernel("convert_f16");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public IBackendDevice Device => _device;

    public bool Supports(ComputeOp op, GgmlType type) => op switch
    {
        ComputeOp.MatMul or ComputeOp.GetRows => _weightKernels.ContainsKey(type),
        ComputeOp.Attention or ComputeOp.Convert => type is GgmlType.F32 or GgmlType.F16,
        _ => type == GgmlType.F32,
    };

    public void GetRows(DeviceTensor table, long rowLength, ReadOnlySpan<int> rows, DeviceTensor dst)
    {
        var kernel = WeightKernels(table.Type, "GetRows").GetRows;
        long rowBytes = GgmlTypes.RowSize(table.Type, rowLength);
        int ncols = checked((int)rowLength);
        Require(dst, rows.Length * rowLength * sizeof(float), "GetRows dst");
        nuint global = (nuint)((ncols + Sub - 1) / Sub);
        // One launch per row with the index as a kernel argument: the caller's span needs no device copy (which would
        // have to be a blocking write, since the span may be reused on return) and nothing waits.
        for (int i = 0; i < rows.Length; i++)
        {
            int row = rows[i];
            if (row < 0) throw new ArgumentOutOfRangeException(nameof(rows), row, $"GetRows: row index {row} at position {i} is negative");
            Require(table, (row + 1) * rowBytes, "GetRows table row");
            Arg(kernel, 0, Mem(table)); Arg(kernel, 1, (ulong)table.Offset); Arg(kernel, 2, (ulong)rowBytes);
            Arg(kernel, 3, row); Arg(kernel, 4, ncols);
            Arg(kernel, 5, Mem(dst)); Arg(kernel, 6, (ulong)(dst.Offset + i * rowLength * sizeof(float)));
            Launch1(kernel, global, 0, "get_rows");
        }
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor y, int rows, int n, float eps)
    {
        if (rows == 0) return;
        Require(x, (long)rows * n * sizeof(float), "RmsNorm x");
        Require(weight, (long)n * sizeof(float), "RmsNorm weight");
        Require(y, (long)rows * n * sizeof(float), "RmsNorm y");
        Arg(_rmsNorm, 0, Mem(x)); Arg(_rmsNorm, 1, (ulong)x.Offset);
        Arg(_rmsNorm, 2, Mem(weight)); Arg(_rmsNorm, 3, (ulong)weight.Offset);
        Arg(_rmsNorm, 4, Mem(y)); Arg(_rmsNorm, 5, (ulong)y.Offset);
        Arg(_rmsNorm, 6, n); Arg(_rmsNorm, 7, eps);
        Launch1(_rmsNorm, (nuint)rows * WorkGroup, WorkGroup, "rms_norm");
    }

    public void MatMul(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens)
    {
        if (tokens == 0 || wRows == 0) return;
        var (mv, mm, _) = WeightKernels(w.Type, "MatMul");
        var info = GgmlTypes.Get(w.Type);
        long rowBytes = info.RowSize(wCols);
        // Quantized rows are walked in whole 512-element chunks (the slide); plain rows are bounds-checked per element.
        long paddedCols = info.IsQuantized ? TensorPadding.AlignUp(wCols, OpenCLBufferProvider.RowPaddingElements) : TensorPadding.AlignUp(wCols, Sub);
        long slide = info.IsQuantized ? info.RowSize(paddedCols - wCols) : 0;
        Require(w, wRows * rowBytes + slide, "MatMul weight (all rows plus the slide of the last one)");
        Require(x, (long)tokens * wCols * sizeof(float), "MatMul x");
        Require(y, (long)tokens * wRows * sizeof(float), "MatMul y");
        var kernel = tokens == 1 ? mv : mm;
        Arg(kernel, 0, Mem(w)); Arg(kernel, 1, (ulong)w.Offset); Arg(kernel, 2, (ulong)rowBytes);
        Arg(kernel, 3, checked((int)wCols)); Arg(kernel, 4, checked((int)(paddedCols / Sub)));
        Arg(kernel, 5, Mem(x)); Arg(kernel, 6, (ulong)x.Offset);
        Arg(kernel, 7, Mem(y)); Arg(kernel, 8, (ulong)y.Offset);
        Arg(kernel, 9, checked((int)wRows)); Arg(kernel, 10, tokens);
        if (_device.CpuShapedKernels)
        {
            // One work-item per group of rows. Work-groups are what a CPU driver hands to its threads, and each costs a
            // scheduling round trip, so they are made as large as keeps ~8 per compute unit (a 32000-row output matrix in
            // 16000 one-item groups spent more time scheduling than computing); the kernel skips the padding items.
            long items = (wRows + OpenCLDevice.CpuMatMulRows - 1) / OpenCLDevice.CpuMatMulRows;
            long groupSize = Math.Clamp(items / (8L * _device.ComputeUnits), 1, 64);
            nuint globalItems = (nuint)((items + groupSize - 1) / groupSize * groupSize);
            nuint groupItems = (nuint)groupSize;
            Launch(kernel, 1, &globalItems, &groupItems, tokens == 1 ? "mul_mv_cpu" : "mul_mm_cpu");
            return;
        }
        int tile = tokens == 1 ? 1 : MatMulTile;
        nuint* global = stackalloc nuint[2] { (nuint)wRows * WorkGroup, (nuint)((tokens + tile - 1) / tile) };
        nuint* local = stackalloc nuint[2] { WorkGroup, 1 };
        Launch(kernel, 2, global, local, tokens == 1 ? "mul_mv" : "mul_mm");
    }

    public void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope)
    {
        if (!SetRopeArgs(_rope, x, tokens, heads, headSize, firstPosition, rope)) return;
        nuint* global = stackalloc nuint[3] { (nuint)(rope.Dims / 2), (nuint)heads, (nuint)tokens };
        Launch(_rope, 3, global, null, "rope");
    }

    public void RopeWithFactors(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope, DeviceTensor factors)
    {
        if (factors.Type != GgmlType.F32) throw new ArgumentException($"opencl: RoPE frequency factors must be F32, not {factors.Type}", nameof(factors));
        if (!SetRopeArgs(_ropeFactors, x, tokens, heads, headSize, firstPosition, rope)) return;
        Require(factors, (long)(rope.Dims / 2) * sizeof(float), "RopeWithFactors factors");
        Arg(_ropeFactors, 8, Mem(factors)); Arg(_ropeFactors, 9, (ulong)factors.Offset);
        nuint* global = stackalloc nuint[3] { (nuint)(rope.Dims / 2), (nuint)heads, (nuint)tokens };
        Launch(_ropeFactors, 3, global, null, "rope_factors");
    }

    /// <summary>Checks the shape and sets the arguments rope and rope_factors share (0-7); false when there is nothing to rotate.</summary>
    private bool SetRopeArgs(nint kernel, DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope)
    {
        if (rope.Dims <= 0 || rope.Dims % 2 != 0 || rope.Dims > headSize)
            throw new ArgumentOutOfRangeException(nameof(rope), rope.Dims, $"RoPE dimension must be even, positive and at most the head size ({headSize})");
        if (tokens == 0) return false;
        Require(x, (long)tokens * heads * headSize * sizeof(float), "Rope x");
        nint freqs = RopeFrequencies(rope);
        Arg(kernel, 0, Mem(x)); Arg(kernel, 1, (ulong)x.Offset); Arg(kernel, 2, freqs); Arg(kernel, 3, heads); Arg(kernel, 4, headSize);
        Arg(kernel, 5, rope.Dims); Arg(kernel, 6, firstPosition); Arg(kernel, 7, rope.Mode == RopeMode.NeoX ? 1 : 0);
        return true;
    }

    /// <summary>
    /// The per-pair frequency table of <paramref name="rope"/> as (hi, lo) float pairs, computed in double and uploaded once
    /// per distinct (dims, base, scale) — a model uses one, so this uploads once per queue.
    /// </summary>
    private nint RopeFrequencies(RopeParams rope)
    {
        if (_ropeTable != 0 && _ropeKey == (rope.Dims, rope.FrequencyBase, rope.FrequencyScale)) return _ropeTable;
        int half = rope.Dims / 2;
        var table = new float[2 * half];
        double logBase = Math.Log(rope.FrequencyBase);
        for (int i = 0; i < half; i++)
        {
            double f = rope.FrequencyScale * Math.Exp(-2.0 * i / rope.Dims * logBase);
            table[2 * i] = (float)f;
            table[2 * i + 1] = (float)(f - (float)f);
        }
        if (_ropeTable != 0) _cl.ReleaseMemObject(_ropeTable);
        _ropeTable = 0;
        int err;
        fixed (float* p = table)
            _ropeTable = _cl.CreateBuffer(_device.Context, MemFlags.ReadOnly | MemFlags.CopyHostPtr, (nuint)(table.Length * sizeof(float)), p, &err);
        OpenCLRuntime.Check(err, "clCreateBuffer (RoPE frequency table)");
        _ropeKey = (rope.Dims, rope.FrequencyBase, rope.FrequencyScale);
        return _ropeTable;
    }

    public void Attention(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output, AttentionParams p)
    {
        if (kCache.Type != vCache.Type) throw new ArgumentException($"opencl: K cache is {kCache.Type} but V cache is {vCache.Type}; they must match");
        if (p.Heads <= 0 || p.KvHeads <= 0 || p.Heads % p.KvHeads != 0)
            throw new ArgumentException($"opencl: {p.Heads} heads is not a positive multiple of {p.KvHeads} KV heads");
        // The CPU-shaped kernel walks a head in 8-float slices; other head sizes take the work-group kernel.
        bool cpuShaped = _device.CpuShapedKernels && p.HeadSize % 8 == 0;
        var kernel = kCache.Type switch
        {
            GgmlType.F32 => cpuShaped ? _attentionCpuF32 : _attentionF32,
            GgmlType.F16 => cpuShaped ? _attentionCpuF16 : _attentionF16,
            _ => throw new NotSupportedException($"opencl: Attention over a {kCache.Type} cache"),
        };
        if (p.Tokens == 0) return;
        int visible = p.FirstPosition + p.Tokens;
        long cacheBytes = GgmlTypes.RowSize(kCache.Type, (long)visible * p.KvHeads * p.HeadSize);
        long qBytes = (long)p.Tokens * p.Heads * p.HeadSize * sizeof(float);
        Require(q, qBytes, "Attention q");
        Require(output, qBytes, "Attention output");
        Require(kCache, cacheBytes, "Attention K cache");
        Require(vCache, cacheBytes, "Attention V cache");
        nint scratch = Scratch((long)p.Tokens * p.Heads * visible * sizeof(float));
        Arg(kernel, 0, Mem(q)); Arg(kernel, 1, (ulong)q.Offset);
        Arg(kernel, 2, Mem(kCache)); Arg(kernel, 3, (ulong)kCache.Offset);
        Arg(kernel, 4, Mem(vCache)); Arg(kernel, 5, (ulong)vCache.Offset);
        Arg(kernel, 6, Mem(output)); Arg(kernel, 7, (ulong)output.Offset);
        Arg(kernel, 8, scratch);
        Arg(kernel, 9, p.Heads); Arg(kernel, 10, p.KvHeads); Arg(kernel, 11, p.HeadSize);
        Arg(kernel, 12, p.FirstPosition); Arg(kernel, 13, visible); Arg(kernel, 14, p.Scale);
        if (cpuShaped)
        {
            nuint* items = stackalloc nuint[2] { (nuint)p.Heads, (nuint)p.Tokens };
            nuint* single = stackalloc nuint[2] { 1, 1 };
            Launch(kernel, 2, items, single, "attention_cpu");
            return;
        }
        nuint* global = stackalloc nuint[2] { (nuint)p.Heads * WorkGroup, (nuint)p.Tokens };
        nuint* local = stackalloc nuint[2] { WorkGroup, 1 };
        Launch(kernel, 2, global, local, "attention");
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n) => Binary(_siluMul, gate, up, y, n, "silu_mul");

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor y, long n) => Binary(_add, a, b, y, n, "add");

    public void AddBias(DeviceTensor x, DeviceTensor bias, int rows, int n)
    {
        long total = (long)rows * n;
        if (total == 0) return;
        Require(x, total * sizeof(float), "AddBias x");
        Require(bias, (long)n * sizeof(float), "AddBias bias");
        Arg(_addBias, 0, Mem(x)); Arg(_addBias, 1, (ulong)x.Offset); Arg(_addBias, 2, Mem(bias)); Arg(_addBias, 3, (ulong)bias.Offset);
        Arg(_addBias, 4, n); Arg(_addBias, 5, total);
        Launch1(_addBias, (nuint)total, 0, "add_bias");
    }

    public void Convert(DeviceTensor src, DeviceTensor dst, long n)
    {
        if (n == 0) return;
        Require(src, n * sizeof(float), "Convert src");
        switch (dst.Type)
        {
            case GgmlType.F32:
                Require(dst, n * sizeof(float), "Convert dst");
                OpenCLRuntime.Check(_cl.EnqueueCopyBuffer(_queue, Mem(src), Mem(dst), (nuint)src.Offset, (nuint)dst.Offset, (nuint)(n * sizeof(float)), 0, null, null), "clEnqueueCopyBuffer (Convert)");
                break;
            case GgmlType.F16:
                Require(dst, n * 2, "Convert dst");
                Arg(_convertF16, 0, Mem(src)); Arg(_convertF16, 1, (ulong)src.Offset); Arg(_convertF16, 2, Mem(dst)); Arg(_convertF16, 3, (ulong)dst.Offset);
                Arg(_convertF16, 4, n);
                Launch1(_convertF16, (nuint)n, 0, "convert_f16");
                break;
            default:
                throw new NotSupportedException($"opencl: Convert to {dst.Type}");
        }
    }

    public void Upload(ReadOnlySpan<float> source, DeviceTensor dst)
    {
        if (source.IsEmpty) return;
        long bytes = (long)source.Length * sizeof(float);
        Require(dst, bytes, "Upload dst");
        if (dst.Buffer.Ownership == BufferOwnership.Imported)
            throw new InvalidOperationException($"opencl: Upload into imported buffer '{dst.Buffer.Name}' refused: imported buffers are never written");
        // Blocking: the contract lets the caller reuse the span as soon as this returns.
        fixed (float* p = source)
            OpenCLRuntime.Check(_cl.EnqueueWriteBuffer(_queue, Mem(dst), true, (nuint)dst.Offset, (nuint)bytes, p, 0, null, null), "clEnqueueWriteBuffer (Upload)");
    }

    public void Download(DeviceTensor src, Span<float> destination)
    {
        if (destination.IsEmpty) { Synchronize(); return; }
        long bytes = (long)destination.Length * sizeof(float);
        Require(src, bytes, "Download src");
        fixed (float* p = destination)
            OpenCLRuntime.Check(_cl.EnqueueReadBuffer(_queue, Mem(src), true, (nuint)src.Offset, (nuint)bytes, p, 0, null, null), "clEnqueueReadBuffer (Download)");
    }

    public void Synchronize() => OpenCLRuntime.Check(_cl.Finish(_queue), "clFinish");

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _cl.Finish(_queue);
        foreach (nint k in _kernels) _cl.ReleaseKernel(k);
        if (_scratch != 0) _cl.ReleaseMemObject(_scratch);
        if (_ropeTable != 0) _cl.ReleaseMemObject(_ropeTable);
    }

    private void Binary(nint kernel, DeviceTensor a, DeviceTensor b, DeviceTensor y, long n, string name)
    {
        if (n == 0) return;
        long bytes = n * sizeof(float);
        Require(a, bytes, name); Require(b, bytes, name); Require(y, bytes, name);
        Arg(kernel, 0, Mem(a)); Arg(kernel, 1, (ulong)a.Offset); Arg(kernel, 2, Mem(b)); Arg(kernel, 3, (ulong)b.Offset);
        Arg(kernel, 4, Mem(y)); Arg(kernel, 5, (ulong)y.Offset); Arg(kernel, 6, n);
        Launch1(kernel, (nuint)n, 0, name);
    }

    private (nint Mv, nint Mm, nint GetRows) WeightKernels(GgmlType type, string op)
        => _weightKernels.TryGetValue(type, out var k) ? k : throw new NotSupportedException($"opencl: {op} with {type} weights is not supported (Supports() says so)");

    /// <summary>Attention score scratch, grown (never shrunk) on demand; the old buffer is released after queued work using it.</summary>
    private nint Scratch(long bytes)
    {
        if (bytes <= _scratchBytes) return _scratch;
        long size = Math.Max(bytes, 2 * _scratchBytes);
        int err;
        nint mem = _cl.CreateBuffer(_device.Context, MemFlags.ReadWrite, (nuint)size, null, &err);
        OpenCLRuntime.Check(err, $"clCreateBuffer of {size} B (attention scratch)");
        if (_scratch != 0) _cl.ReleaseMemObject(_scratch);
        _scratch = mem;
        _scratchBytes = size;
        return mem;
    }

    private nint Kernel(string name)
    {
        int err;
        nint k = _cl.CreateKernel(_device.Program, name, &err);
        OpenCLRuntime.Check(err, $"clCreateKernel({name})");
        _kernels.Add(k);
        return k;
    }

    /// <summary>The cl_mem of a tensor, after checking it belongs to this device.</summary>
    private nint Mem(DeviceTensor t)
    {
        if (t.Buffer is not OpenCLBuffer b || b.Device != _device)
            throw new ArgumentException($"opencl: buffer '{t.Buffer.Name}' does not belong to this OpenCL device");
        ObjectDisposedException.ThrowIf(b.IsDisposed, b);
        return b.Memory;
    }

    /// <summary>Kernels do not bounds-check against the buffer: refuse a range that would run past it.
    /// <paramref name="what"/> is a constant so the check allocates nothing on the hot path.</summary>
    private static void Require(DeviceTensor t, long bytes, string what)
    {
        if (t.Offset < 0 || bytes < 0 || t.Offset > t.Buffer.Size || bytes > t.Buffer.Size - t.Offset)
            throw new ArgumentOutOfRangeException(nameof(t), $"opencl: {what} needs {bytes} B at offset {t.Offset}, outside buffer '{t.Buffer.Name}' ({t.Buffer.Size} B)");
    }

    private void Arg<T>(nint kernel, uint index, T value) where T : unmanaged
        => OpenCLRuntime.Check(_cl.SetKernelArg(kernel, index, (nuint)sizeof(T), &value), "clSetKernelArg");

    private void Launch1(nint kernel, nuint global, nuint local, string name)
    {
        if (local != 0) Launch(kernel, 1, &global, &local, name);
        else Launch(kernel, 1, &global, null, name);
    }

    private void Launch(nint kernel, uint dims, nuint* global, nuint* local, string name)
    {
        int err = _cl.EnqueueNdrangeKernel(_queue, kernel, dims, null, global, local, 0, null, null);
        if (err != 0) OpenCLRuntime.Check(err, $"clEnqueueNDRangeKernel({name})"); // message built only on failure
    }
}

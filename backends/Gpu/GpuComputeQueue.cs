using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Gpu;

/// <summary>
/// The op queue of one GPU stream (CUDA or HIP, through <see cref="IGpuNative"/>). Every op is a kernel launch (or an async copy) on the stream; the host waits
/// only in <see cref="Download"/> and <see cref="Synchronize"/>. Host data the ops need (uploads, row ids) is
/// copied into a pinned staging arena first, so the caller's span can be reused at once; the arena is recycled
/// whenever the stream is known idle, and the queue waits for the stream only when the arena runs out.
/// </summary>
internal sealed unsafe class GpuComputeQueue : IComputeQueue
{
    private const long InitialStagingBytes = 1 << 20;
    private const long StagingAlignment = 256;

    private readonly GpuDevice _device;
    private readonly GpuRuntime _rt;
    private readonly IGpuNative _d;
    private readonly string _backend; // "cuda" / "hip", for messages
    private readonly nint _stream;
    private readonly nint[] _getRows = new nint[8], _matmul1 = new nint[8], _matmulN = new nint[8];
    private readonly nint _rmsNorm, _rmsNormRow, _rope, _ropeStoreKv, _siluMul, _add, _addBias, _copyF32, _convertF16;
    // The attention kernels per KV cache type ([CacheSlot]: F32, F16, Q8_0, Q4_0; KernelSource.CacheTypes): prompts (one block per
    // (head, token)), decode steps, long decode histories split over blocks, and multi-sequence batches (docs/batching.md#backends).
    private readonly nint[] _attention = new nint[KernelSource.CacheTypes.Count];
    // Decode steps, split histories and batch rows per [AttentionStepSlot: CacheSlot * 2 + narrow] (narrow: heads of up to
    // LaunchGeometry.AttentionNarrowHeadSize, the *_h128 kernels), and the blocks of each split kernel the GPU holds at once.
    private readonly nint[] _attentionDecode = new nint[KernelSource.CacheTypes.Count * 2], _attentionSplit = new nint[KernelSource.CacheTypes.Count * 2],
                            _attentionRows = new nint[KernelSource.CacheTypes.Count * 2];
    private readonly int[] _attentionSplitResident = new int[KernelSource.CacheTypes.Count * 2];
    // Prompt attention on the tensor cores per cache slot, head size 64 / 128 (0: not used here, or no such kernel: F32).
    private readonly nint[] _attentionMma64 = new nint[KernelSource.CacheTypes.Count], _attentionMma128 = new nint[KernelSource.CacheTypes.Count];
    private readonly nint _ropeStoreKvRows; // multi-sequence batches (docs/batching.md#backends)
    // A block cache's stores per [CacheSlot] (Q8_0, Q4_0; 0 for F32 and F16): Convert, and the store after rope_store_kv
    // (docs/gpu-kernels.md#q8_0-kv-cache, #q4_0-kv-cache).
    private readonly nint[] _convertBlocks = new nint[KernelSource.CacheTypes.Count], _storeKvBlocks = new nint[KernelSource.CacheTypes.Count];
    // One-token decode kernels per weight slot (kernels.cu MATVEC_KERNELS): on 8-bit activations for the quantized types, on F32
    // ones for the plain types. _matVecRope: the q/k/v mat-vec that also rotates and stores k, v (MatMulRopeAndStoreKv).
    private readonly nint[] _matVec = new nint[8], _swiGlu = new nint[8], _matVecRope = new nint[8];
    private readonly nint[] _matMulQ8 = new nint[8], _dequantizeF16 = new nint[8];
    private readonly nint _quantizeX;
    private readonly int _mmqRows; // weight rows per mmq block, as the kernels were compiled (KernelSource.MmqRows)
    private readonly nint[] _mmq = new nint[8 * 3]; // [slot * 3 + LaunchGeometry.MmqTileIndex]: int8 tensor-core matmuls (kernels.cu mmq_*)
    private readonly bool _integerMma;            // the mmq kernels run here (CUDA sm_80+, option mma on)
    private readonly int[] _mmqResident = new int[8 * 3]; // as _mmq: blocks of that kernel the whole GPU holds at once (SMs × blocks per SM), for the K split
    // Q4_0 weights in the tiled layout (docs/gpu-kernels.md#tiled-q4_0-weights): the copy kernel and mmq on the copies.
    private readonly bool _tiled; // the weight_layout option is tiled and the mmq kernels run here
    private readonly nint _tileQ4_0;
    private readonly nint[] _mmqTiled = new nint[3];
    private readonly int[] _mmqTiledResident = new int[3];
    private readonly GpuKernelOptions _options;
    private readonly bool _programmaticLaunch; // kernels launched with programmatic stream serialization (GpuRuntime.ProgrammaticLaunch)
    private readonly IGpuBlas? _blas;
    private nint _blasHandle;
    private readonly IGpuStepGraph? _graph; // null unless the graphs option is on (and the binding has graphs: CUDA)
    private readonly GpuOpProfile? _profile; // PLUGINENGINE_<BACKEND>_PROFILE=1 (without graphs)
    private readonly GpuHostProfile? _hostProfile; // PLUGINENGINE_<BACKEND>_PROFILE=host

    // Scratch (device memory, grown on demand): the 8-bit activation row of the int8 mat-vec [cols int8, then one
    // XScale {d, s} per 32 elements at an aligned offset], and the F16 weights [rows, cols] and activations
    // [tokens, cols] of the BLAS prompt path.
    private ulong _xq8, _weightsF16, _activationsF16;
    private long _xq8Capacity, _weightsF16Capacity, _activationsF16Capacity;

    // A second 8-bit activation scratch for an op that reads one quantized row and writes the next (the decode SwiGLU mat-vec,
    // swiglu_quantize), and that op's tickets: one int per 32-row group, all zero between launches (its last block resets them).
    private ulong _xq8Out, _swiGluTickets;
    private long _xq8OutCapacity, _swiGluTicketsCapacity;

    // Split decode attention: per (head, split) partial results [max, sum, headSize unnormalized outputs] as F32, and one
    // int ticket per head (all zero between launches: the combining block resets its head's).
    private ulong _attentionPartials, _attentionTickets;
    private long _attentionPartialsCapacity, _attentionTicketsCapacity;

    // mmq split over K (kernels.cu mmq): per (tile, slice) partial tiles [16 × tiles tokens, rows per block] as F32, and one
    // int ticket per tile (all zero between launches: the combining block resets its tile's).
    private ulong _mmqPartials, _mmqTickets;
    private long _mmqPartialsCapacity, _mmqTicketsCapacity;

    // Which activation row is held quantized (its device address and length, or 0), and where (values and scales, in _xq8 or
    // _xq8Out): q, k and v (and gate and up) read the same row, so it is quantized once for them. Every op other than a
    // matmul may write memory, so each one forgets it.
    private ulong _xq8Source, _xq8Values, _xq8Scales;
    private long _xq8Elements;

    // The same for a prompt's F16 copy of a GEMM input in _activationsF16 (option gemm_input fused): which F32 rows it holds.
    private ulong _xf16Source;
    private long _xf16Elements;

    private byte* _staging;
    private long _stagingCapacity, _stagingUsed;
    private ulong _rowIds;
    private long _rowIdsCapacity;

    // A multi-sequence batch's row table [rows, 2] (position, cache row of the sequence's position 0) on the device, and the
    // host copy of what it holds: every layer of a step uses the same table, so it is uploaded once per step.
    private ulong _segmentRows;
    private long _segmentRowsCapacity;
    private int[] _segmentRowsHost = new int[256];
    private int _segmentRowsCount = -1; // ints the device table holds; −1: nothing valid
    private bool _disposed;
    private nint _transferEvent; // recorded after copies out of this queue, and before copies into it (CopyTo); 0 until the first

    public GpuComputeQueue(GpuDevice device)
    {
        _device = device;
        _rt = device.Runtime;
        _d = _rt.Native;
        _backend = _rt.Backend;
        _rt.MakeCurrent();
        // A blocking stream: it waits for work on the default stream, where buffer uploads and slide memsets are issued.
        _stream = _d.CreateStream();
        foreach (var type in KernelSource.WeightTypes)
        {
            int slot = KernelSlot(type);
            string s = KernelSource.WeightSuffix(type)!;
            _getRows[slot] = _rt.Function($"get_rows_{s}");
            _matmul1[slot] = _rt.Function($"matmul_{s}_t1");
            _matmulN[slot] = _rt.Function($"matmul_{s}_tn");
        }
        _rmsNorm = _rt.Function("rms_norm");
        _rmsNormRow = _rt.Function("rms_norm_q8_row");
        _rope = _rt.Function("rope");
        _ropeStoreKv = _rt.Function("rope_store_kv");
        foreach (var type in KernelSource.CacheTypes)
        {
            int c = CacheSlot(type);
            string s = KernelSource.WeightSuffix(type)!;
            _attention[c] = _rt.Function($"attention_{s}");
            foreach (int headSize in new[] { LaunchGeometry.AttentionMaxHeadSize, LaunchGeometry.AttentionNarrowHeadSize })
            {
                int i = AttentionStepSlot(type, headSize);
                _attentionDecode[i] = _rt.Function(LaunchGeometry.AttentionStepKernelName("decode", s, headSize));
                _attentionSplit[i] = _rt.Function(LaunchGeometry.AttentionStepKernelName("split", s, headSize));
                _attentionRows[i] = _rt.Function(LaunchGeometry.AttentionStepKernelName("rows", s, headSize));
                int perSm = _d.MaxActiveBlocksPerMultiprocessor(_attentionSplit[i], LaunchGeometry.AttentionWarps * 32);
                _attentionSplitResident[i] = _rt.Facts.Multiprocessors * Math.Max(1, perSm); // 0: not known (HIP), one a SM
            }
        }
        if (_rt.FlashAttention)
        {
            foreach (var type in KernelSource.MmaCacheTypes)
            {
                string s = KernelSource.WeightSuffix(type)!;
                _attentionMma64[CacheSlot(type)] = _rt.Function(LaunchGeometry.AttentionMmaKernelName(64, s));
                _attentionMma128[CacheSlot(type)] = _rt.Function(LaunchGeometry.AttentionMmaKernelName(128, s));
            }
        }
        _ropeStoreKvRows = _rt.Function("rope_store_kv_rows");
        _siluMul = _rt.Function("silu_mul");
        _add = _rt.Function("add");
        _addBias = _rt.Function("add_bias");
        _copyF32 = _rt.Function("copy_f32");
        _convertF16 = _rt.Function("convert_f32_f16");
        foreach (var type in KernelSource.BlockCacheTypes)
        {
            _convertBlocks[CacheSlot(type)] = _rt.Function($"convert_f32_{KernelSource.WeightSuffix(type)}");
            _storeKvBlocks[CacheSlot(type)] = _rt.Function($"store_kv_{KernelSource.WeightSuffix(type)}");
        }
        _quantizeX = _rt.Function("quantize_x_q8");
        foreach (var type in KernelSource.Int8MatVecTypes) _matMulQ8[KernelSlot(type)] = _rt.Function($"matmul_q8_{KernelSource.WeightSuffix(type)}");
        foreach (var type in KernelSource.DecodeMatVecTypes)
        {
            string k = KernelSource.DecodeKernelSuffix(type);
            _matVec[KernelSlot(type)] = _rt.Function($"matvec_{k}");
            _swiGlu[KernelSlot(type)] = _rt.Function($"swiglu_{k}");
            _matVecRope[KernelSlot(type)] = _rt.Function($"matvec_rope_{k}");
        }
        foreach (var type in KernelSource.DequantizeF16Types) _dequantizeF16[KernelSlot(type)] = _rt.Function($"dequantize_f16_{KernelSource.WeightSuffix(type)}");
        foreach (var type in KernelSource.MmaTypes)
            for (int i = 0; i < LaunchGeometry.MmqTokenTiles.Count; i++)
                _mmq[KernelSlot(type) * 3 + i] = _rt.Function(LaunchGeometry.MmqKernelName(KernelSource.WeightSuffix(type)!, LaunchGeometry.MmqTokenTiles[i]));
        _integerMma = _rt.IntegerMma;
        _options = _rt.Options;
        _mmqRows = KernelSource.MmqRows(_options.KernelDefines);
        if (_integerMma)
            foreach (var type in KernelSource.MmaTypes)
                for (int i = 0; i < LaunchGeometry.MmqTokenTiles.Count; i++)
                {
                    int perSm = _d.MaxActiveBlocksPerMultiprocessor(_mmq[KernelSlot(type) * 3 + i], LaunchGeometry.MmqWarps * 32);
                    _mmqResident[KernelSlot(type) * 3 + i] = _rt.Facts.Multiprocessors * (perSm > 0 ? perSm : LaunchGeometry.MmqAssumedBlocksPerSm);
                }
        _programmaticLaunch = _rt.ProgrammaticLaunch;
        _blas = _options.BlasPrompt ? _rt.Blas : null;
        if (_options.Graphs) _graph = _d.CreateStepGraph(_rt, _stream);
        _tiled = _options.TiledWeights && _integerMma;
        if (_tiled)
        {
            _tileQ4_0 = _rt.Function("tile_q4_0");
            for (int i = 0; i < LaunchGeometry.MmqTokenTiles.Count; i++)
            {
                _mmqTiled[i] = _rt.Function(LaunchGeometry.MmqKernelName(KernelSource.TiledQ4_0Suffix, LaunchGeometry.MmqTokenTiles[i]));
                int perSm = _d.MaxActiveBlocksPerMultiprocessor(_mmqTiled[i], LaunchGeometry.MmqWarps * 32);
                _mmqTiledResident[i] = _rt.Facts.Multiprocessors * (perSm > 0 ? perSm : LaunchGeometry.MmqAssumedBlocksPerSm);
            }
        }
        if (_graph is null && _rt.ProfileRequested) _profile = new GpuOpProfile(_d);
        if (_rt.HostProfileRequested) _hostProfile = new GpuHostProfile(_backend);
        GrowStaging(InitialStagingBytes);
    }

    public IBackendDevice Device => _device;

    public bool Supports(ComputeOp op, GgmlType type) => op switch
    {
        ComputeOp.MatMul or ComputeOp.GetRows => KernelSource.WeightSuffix(type) is not null,
        // The KV cache types (KernelSource.CacheTypes: F32, F16, Q8_0, Q4_0; both dialects compile their kernels), Q8_0 only with
        // the q8_0_cache option and Q4_0 only with q4_0_cache. Without them the core keeps such a cache, and the attention over
        // it, on the CPU (docs/gpu-kernels.md#q8_0-kv-cache, #q4_0-kv-cache).
        ComputeOp.Attention or ComputeOp.Convert => KernelSource.CacheTypes.Contains(type)
                                                     && (type != GgmlType.Q8_0 || _options.DeviceQ8_0Cache) && (type != GgmlType.Q4_0 || _options.DeviceQ4_0Cache),
        _ => type == GgmlType.F32,
    };

    public void GetRows(DeviceTensor table, long rowLength, ReadOnlySpan<int> rows, DeviceTensor dst)
    {
        ForgetActivationCopies();
        if (rows.IsEmpty) return;
        int slot = KernelSlot(table.Type);
        _rt.MakeCurrent();
        long bytes = (long)rows.Length * sizeof(int);
        if (_rowIdsCapacity < bytes) GrowRowIds(bytes);
        byte* staged = Stage(MemoryMarshal.AsBytes(rows));
        _graph?.Flush(); // recorded kernels run first: the copy is live
        _d.CopyHostToDeviceAsync(_rowIds, staged, bytes, _stream, "row ids");
        ulong t = Ptr(table), ids = _rowIds, y = Ptr(dst);
        long rowBytes = GgmlTypes.RowSize(table.Type, rowLength), length = rowLength;
        void** args = stackalloc void*[] { &t, &rowBytes, &ids, &y, &length };
        LaunchKernel(_getRows[slot], LaunchGeometry.GetRows(rows.Length, rowLength), args, "get_rows");
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor y, int rows, int n, float eps)
    {
        ForgetActivationCopies();
        if (rows <= 0) return;
        _rt.MakeCurrent();
        ulong px = Ptr(x), pw = Ptr(weight), py = Ptr(y);
        // One row (a decode step) is what the int8 mat-vecs read next, a small batch (several sequences decoding together)
        // what the int8 batch matmuls read: normalize each row over several blocks and quantize it in the same kernel (which
        // reads x in 16-byte loads). One block per row would leave most SMs idle.
        if (!_options.BatchInvariant && px % 16 == 0 && (rows == 1 ? FusesQuantization(n) : QuantizesRows(rows, n)))
        {
            var (xq, xs) = QuantizedXScratch((long)rows * n);
            void** rowArgs = stackalloc void*[] { &px, &pw, &py, &n, &eps, &xq, &xs };
            LaunchKernel(_rmsNormRow, LaunchGeometry.RmsNormRow(n, rows), rowArgs, rows == 1 ? "rms_norm (decode row)" : "rms_norm (batch rows)");
            RememberQuantizedX(py, (long)rows * n, xq, xs);
            return;
        }
        // One block a row: prompts (not quantized: cuBLAS reads them), batch-invariant mode (every row count, quantized for the
        // int8 kernels) and rows the kernel above cannot take (not 16-byte aligned, not whole 32-element blocks).
        bool quantize = QuantizesRows(rows, n), f16 = WritesGemmInput(rows);
        var (bq, bs) = quantize ? QuantizedXScratch((long)rows * n) : (0UL, 0UL);
        ulong yh = f16 ? GemmInputScratch((long)rows * n) : 0;
        void** args = stackalloc void*[] { &px, &pw, &py, &n, &eps, &bq, &bs, &yh };
        LaunchKernel(_rmsNorm, LaunchGeometry.RmsNorm(rows), args, f16 ? "rms_norm (+f16)" : "rms_norm");
        if (quantize) RememberQuantizedX(py, (long)rows * n, bq, bs);
        if (f16) RememberGemmInput(py, (long)rows * n);
    }

    /// <summary>Whether an op that writes an n-element activation row also quantizes it for the int8 mat-vec.</summary>
    private bool FusesQuantization(long n) => _options.Int8MatVec && n % 32 == 0 && n <= LaunchGeometry.MaxFusedQuantizeElements;

    /// <summary>
    /// Whether an op that writes <paramref name="rows"/> activation rows of <paramref name="n"/> elements also quantizes them: when
    /// a matmul of that many tokens reads its x through the int8 kernels (mmq_*, matmul_q8_*), which would otherwise launch
    /// quantize_x_q8 for it; prompts for cuBLAS are not quantized (in batch-invariant mode every row count takes the int8 kernels).
    /// </summary>
    private bool QuantizesRows(int rows, long n)
        => _options.Int8MatVec && n % 32 == 0 && rows >= 1 && (_options.BatchInvariant || (_options.Int8SmallBatch && rows < LaunchGeometry.BlasMinTokens));

    /// <summary>Whether an op writing <paramref name="rows"/> rows of <paramref name="n"/> elements quantizes them: one row for the mat-vec, more for the int8 batch matmuls.</summary>
    private bool QuantizesOutput(int rows, long n) => rows == 1 ? FusesQuantization(n) : QuantizesRows(rows, n);

    /// <summary>Device addresses of the int8 values and the block scales of an n-element row in the 8-bit activation scratch.</summary>
    private (ulong Values, ulong Scales) QuantizedXScratch(long n) => QuantizedScratch(ref _xq8, ref _xq8Capacity, n, "8-bit activations");

    /// <summary>The same in the second scratch, for an op that reads the first (<see cref="MatMulSwiGlu"/>).</summary>
    private (ulong Values, ulong Scales) QuantizedOutputScratch(long n) => QuantizedScratch(ref _xq8Out, ref _xq8OutCapacity, n, "8-bit activations (second)");

    private (ulong Values, ulong Scales) QuantizedScratch(ref ulong buffer, ref long capacity, long n, string what)
    {
        long scalesAt = TensorPadding.AlignUp(n, StagingAlignment);
        ulong before = buffer;
        EnsureScratch(ref buffer, ref capacity, scalesAt + n / 32 * 8, what);
        if (buffer != before) ForgetActivationCopies(); // the row held may have been in the old buffer
        return (buffer, buffer + (ulong)scalesAt);
    }

    /// <summary>Notes that <paramref name="elements"/> floats at <paramref name="source"/> are held quantized at (<paramref name="values"/>, <paramref name="scales"/>).</summary>
    private void RememberQuantizedX(ulong source, long elements, ulong values, ulong scales)
    {
        _xq8Source = source;
        _xq8Elements = elements;
        _xq8Values = values;
        _xq8Scales = scales;
    }

    public void MatMul(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens)
        => MatMulInto(w, wRows, wCols, x, y, tokens, accumulate: false);

    /// <summary>y = x·wᵀ, or y += x·wᵀ when <paramref name="accumulate"/> (decode mat-vec and BLAS only: callers check <see cref="Accumulates"/>).</summary>
    private void MatMulInto(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens, bool accumulate)
    {
        if (tokens <= 0 || wRows <= 0) return;
        int slot = KernelSlot(w.Type);
        _rt.MakeCurrent();
        ulong pw = Ptr(w), px = Ptr(x), py = Ptr(y);
        long rowBytes = GgmlTypes.RowSize(w.Type, wCols), rows = wRows;
        int cols = checked((int)wCols);
        if (UsesMatVec(w.Type, tokens))
        {
            var targets = new MatVecTargets { Count = 1, Accumulate = accumulate ? 1 : 0 };
            targets.Set(0, pw, rowBytes, py, rows);
            MatVec(w.Type, px, cols, ref targets);
        }
        else if (UsesMma(w.Type, tokens))
        {
            ulong tiled = TiledCopy(w, rows, cols);
            var targets = new MatVecTargets { Count = 1, Accumulate = accumulate ? 1 : 0 };
            targets.Set(0, tiled != 0 ? tiled : pw, rowBytes, py, rows);
            MmqLaunch(w.Type, px, cols, tokens, ref targets, tiled != 0);
        }
        else if (UsesInt8SmallBatch(w.Type, tokens))
        {
            var (xq, xs) = EnsureQuantizedX(px, cols, tokens);
            int r = checked((int)rows), acc = accumulate ? 1 : 0;
            void** args = stackalloc void*[] { &pw, &rowBytes, &r, &cols, &xq, &xs, &py, &tokens, &acc };
            LaunchKernel(_matMulQ8[slot], LaunchGeometry.MatMulQ8(rows, tokens), args, _profile is null ? "matmul_q8" : $"matmul_q8 {rows}x{cols} x{tokens}{(accumulate ? " +=" : "")}");
        }
        else if (_blas is not null && LaunchGeometry.UsesBlas(tokens) && !_options.BatchInvariant)
            BlasMatMul(w.Type, slot, pw, rowBytes, rows, cols, px, py, tokens, accumulate);
        else
        {
            if (accumulate) throw new InvalidOperationException($"{_backend}: the batched matmul kernels do not accumulate");
            void** args = stackalloc void*[] { &pw, &rowBytes, &rows, &cols, &px, &py, &tokens };
            var kernel = LaunchGeometry.UsesBatchedMatMul(tokens) || _options.BatchInvariant ? _matmulN[slot] : _matmul1[slot];
            LaunchKernel(kernel, LaunchGeometry.MatMul(wRows, tokens), args, "matmul");
        }
        ForgetActivationCopiesIfWritten(py, (long)tokens * rows);
    }

    /// <summary>
    /// One int8 tensor-core matmul launch (mmq_*) over <paramref name="targets"/> of <paramref name="type"/> weights (their tiled copies
    /// when <paramref name="tiled"/>), their row blocks side by side in grid x; quantizes x first unless the scratch holds it.
    /// </summary>
    private void MmqLaunch(GgmlType type, ulong px, int cols, int tokens, ref MatVecTargets targets, bool tiled)
    {
        var (xq, xs) = EnsureQuantizedX(px, cols, tokens);
        int slot = KernelSlot(type), blocks = 0;
        for (int k = 0; k < targets.Count; k++)
        {
            targets.SetFirstBlock(k, blocks);
            blocks += checked((int)LaunchGeometry.CeilDiv(targets.Rows(k), _mmqRows));
        }
        long blockRows = (long)blocks * _mmqRows; // the launch's rows as whole blocks: what MmqSplits and Mmq count
        // K slices: as many as fill the GPU with the kernel launched; in batch-invariant mode with the one-tile kernel whatever
        // the token count, so that the order of a token's sums never depends on its batch (docs/gpu-kernels.md#batch-invariance).
        int tileIndex = LaunchGeometry.MmqTileIndex(tokens), kernel = slot * 3 + tileIndex;
        int resident = tiled ? _mmqTiledResident[_options.BatchInvariant ? 0 : tileIndex] : _mmqResident[_options.BatchInvariant ? slot * 3 : kernel];
        int splits = _options.MmaSplit > 0 ? _options.MmaSplit
            : LaunchGeometry.MmqSplits(blockRows, cols / LaunchGeometry.MmqStepElements(type), _mmqRows, resident);
        var launch = LaunchGeometry.Mmq(blockRows, tokens, _mmqRows, splits);
        ulong partials = 0, tickets = 0;
        if (launch.GridZ > 1) (partials, tickets) = MmqSplitScratch(launch, tokens);
        fixed (MatVecTargets* t = &targets)
        {
            void** args = stackalloc void*[] { t, &cols, &xq, &xs, &tokens, &partials, &tickets };
            LaunchKernel(tiled ? _mmqTiled[tileIndex] : _mmq[kernel], launch, args,
                         _profile is null ? "mmq" : $"mmq{(tiled ? " tiled" : "")} {blockRows}x{cols} x{tokens} #{targets.Count}{(targets.Accumulate != 0 ? " +=" : "")}{(launch.GridZ > 1 ? $" /{launch.GridZ}" : "")}");
        }
    }

    /// <summary>The partials and tickets of an mmq launch split over K (grid z > 1), grown on demand; new tickets start at zero.</summary>
    private (ulong Partials, ulong Tickets) MmqSplitScratch(Launch launch, int tokens)
    {
        long tiles = (long)launch.GridX * launch.GridY;
        EnsureScratch(ref _mmqPartials, ref _mmqPartialsCapacity,
                      tiles * launch.GridZ * 16 * LaunchGeometry.MmqTiles(tokens) * _mmqRows * sizeof(float), "mmq partials");
        return (_mmqPartials, ZeroedTickets(ref _mmqTickets, ref _mmqTicketsCapacity, tiles, "mmq tickets"));
    }

    /// <summary>
    /// Whether one token on <paramref name="type"/> weights goes to the decode mat-vecs (matvec_*, which the fused ops extend to several
    /// targets, accumulation, SwiGLU and RoPE): on 8-bit activations for the quantized types (option <c>matvec int8</c>), on F32 ones
    /// for the plain types while the fused ops and <c>plain_fusion</c> are on (otherwise those take matmul_*_t1, one launch per op;
    /// docs/gpu-kernels.md#f16-decode).
    /// </summary>
    private bool UsesMatVec(GgmlType type, int tokens)
        => tokens == 1 && !_options.BatchInvariant && _matVec[KernelSlot(type)] != 0 && (IsPlain(type) ? _options.FusedOps && _options.PlainFusion : _options.Int8MatVec);

    /// <summary>F32, F16 and BF16: weights whose decode mat-vecs read x as F32.</summary>
    private static bool IsPlain(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16;

    /// <summary>
    /// The activation arguments (xq, xs) of a decode mat-vec on <paramref name="type"/> weights: x's 8-bit row and scales, quantized
    /// now unless the scratch holds them, for the quantized types; x itself (and 0) for the plain types.
    /// </summary>
    private (ulong Values, ulong Scales) MatVecInput(GgmlType type, ulong px, int cols) => IsPlain(type) ? (px, 0UL) : EnsureQuantizedX(px, cols);

    /// <summary>
    /// Whether a batch of mma_min_tokens .. mma_max_tokens tokens on <paramref name="type"/> weights goes to the int8 tensor-core kernel
    /// (mmq_*, CUDA sm_80 and later; docs/gpu-kernels.md#int8-tensor-core-matmuls-mmq).
    /// </summary>
    private bool UsesMma(GgmlType type, int tokens)
        => _integerMma && _options.Int8MatVec && _mmq[KernelSlot(type) * 3] != 0
           && (_options.BatchInvariant ? tokens >= 1 : tokens >= _options.MmaMinTokensFor(type) && tokens <= _options.MmaMaxTokens);

    /// <summary>
    /// Whether a small batch (2 .. BlasMinTokens − 1 tokens: sequences decoding together, short prompt chunks) on
    /// <paramref name="type"/> weights goes to the int8 multi-token kernel (matmul_q8_*; docs/batching.md).
    /// </summary>
    private bool UsesInt8SmallBatch(GgmlType type, int tokens)
        => _options.Int8MatVec && _options.Int8SmallBatch && _matMulQ8[KernelSlot(type)] != 0
           && (_options.BatchInvariant ? tokens >= 1 : tokens > 1 && tokens < LaunchGeometry.BlasMinTokens);

    /// <summary>Whether a matmul of this shape can add into its output in the same pass (int8 kernels or BLAS with β = 1).</summary>
    private bool Accumulates(GgmlType type, int tokens)
        => UsesMatVec(type, tokens) || UsesMma(type, tokens) || UsesInt8SmallBatch(type, tokens)
           || (_blas is not null && LaunchGeometry.UsesBlas(tokens) && !_options.BatchInvariant);

    /// <summary>Forgets the quantized row and the F16 copy when [y, y + floats) overlaps the rows either was made from.</summary>
    private void ForgetActivationCopiesIfWritten(ulong y, long floats)
    {
        static bool Overlaps(ulong source, long elements, ulong y, long floats)
            => source != 0 && y < source + (ulong)(elements * sizeof(float)) && source < y + (ulong)(floats * sizeof(float));
        if (Overlaps(_xq8Source, _xq8Elements, y, floats) || Overlaps(_xf16Source, _xf16Elements, y, floats)) ForgetActivationCopies();
    }

    public void MatMulShared(DeviceTensor x, long cols, int tokens, ReadOnlySpan<MatMulTarget> targets)
    {
        if (!_options.FusedOps)
        {
            foreach (var t in targets) MatMul(t.Weight, t.Rows, cols, x, t.Output, tokens); // the default: one MatMul each
            return;
        }
        // Consecutive targets of one int8 type share a launch: one token's mat-vec (q, k and v of a Q4_0 model: one; Q4_K_M's
        // Q6_K v: two), or a batch's mmq when they all read the same layout (tiled copies or GGUF bytes).
        int i = 0;
        while (i < targets.Length)
        {
            var type = targets[i].Weight.Type;
            bool matVec = UsesMatVec(type, tokens), mma = !matVec && UsesMma(type, tokens);
            if (!(matVec || mma) && BlasMatMulBatch(x, cols, tokens, targets[i..]) is var taken and > 0)
            {
                i += taken;
                continue;
            }
            if (!(matVec || mma) || targets[i].Rows <= 0)
            {
                MatMul(targets[i].Weight, targets[i].Rows, cols, x, targets[i].Output, tokens);
                i++;
                continue;
            }
            _rt.MakeCurrent();
            long rowBytes = GgmlTypes.RowSize(type, cols);
            bool tiled = false; // mmq: the first target's layout, which the others must share
            var batch = new MatVecTargets();
            while (i < targets.Length && batch.Count < MatVecTargets.Capacity && targets[i].Weight.Type == type && targets[i].Rows > 0)
            {
                ulong copy = mma ? TiledCopy(targets[i].Weight, targets[i].Rows, cols) : 0;
                if (batch.Count == 0) tiled = copy != 0;
                else if ((copy != 0) != tiled) break;
                batch.Set(batch.Count, tiled ? copy : Ptr(targets[i].Weight), rowBytes, Ptr(targets[i].Output), targets[i].Rows);
                batch.Count++;
                i++;
            }
            if (matVec) MatVec(type, Ptr(x), checked((int)cols), ref batch);
            else MmqLaunch(type, Ptr(x), checked((int)cols), tokens, ref batch, tiled);
            for (int k = 0; k < batch.Count; k++) ForgetActivationCopiesIfWritten(batch.Output(k), batch.Rows(k) * tokens);
        }
    }

    public void MatMulAdd(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens, DeviceTensor scratch)
    {
        if (_options.FusedOps && Accumulates(w.Type, tokens))
        {
            MatMulInto(w, wRows, wCols, x, y, tokens, accumulate: true);
            return;
        }
        MatMul(w, wRows, wCols, x, scratch, tokens);
        Add(y, scratch, y, (long)tokens * wRows);
    }

    public void MatMulSwiGlu(DeviceTensor wGate, DeviceTensor wUp, long rows, long cols, DeviceTensor x, DeviceTensor gate, DeviceTensor up, int tokens)
    {
        if (!_options.FusedOps || wGate.Type != wUp.Type || !UsesMatVec(wGate.Type, tokens) || rows <= 0)
        {
            MatMulShared(x, cols, tokens, [new MatMulTarget(wGate, rows, gate), new MatMulTarget(wUp, rows, up)]);
            long n = (long)tokens * rows;
            SiluMul(gate, up, gate, n, QuantizesOutput(tokens, rows), tokens);
            return;
        }
        int slot = KernelSlot(wGate.Type);
        _rt.MakeCurrent();
        ulong pg = Ptr(wGate), pu = Ptr(wUp), px = Ptr(x), py = Ptr(gate);
        long rowBytes = GgmlTypes.RowSize(wGate.Type, cols);
        int r = checked((int)rows), c = checked((int)cols);
        var (xq, xs) = MatVecInput(wGate.Type, px, c);
        // The down projection's int8 mat-vec reads the output next: the kernel quantizes it into the second scratch (its
        // input's stays in the first) unless swiglu_quantize is off (or the weights are plain: the down projection reads F32).
        bool quantize = _options.SwiGluQuantize && !IsPlain(wGate.Type) && FusesQuantization(rows);
        var (yq, ys) = quantize ? QuantizedOutputScratch(rows) : (0UL, 0UL);
        ulong tickets = quantize ? ZeroedTickets(ref _swiGluTickets, ref _swiGluTicketsCapacity, rows / 32, "swiglu tickets") : 0;
        void** args = stackalloc void*[] { &pg, &pu, &rowBytes, &r, &c, &xq, &xs, &py, &yq, &ys, &tickets };
        LaunchKernel(_swiGlu[slot], LaunchGeometry.MatVecQ8(rows, 1), args, quantize ? "swiglu_q8 (quantizes)" : "swiglu_q8");
        if (quantize) RememberQuantizedX(py, rows, yq, ys);
        else ForgetActivationCopiesIfWritten(py, rows);
    }

    /// <summary>
    /// At least <paramref name="count"/> int tickets of a "last block to finish" kernel (split attention, split mmq, the SwiGLU
    /// quantize), zeroed when (re)allocated: each launch's last block resets the tickets it used, so they stay zero between launches.
    /// </summary>
    private ulong ZeroedTickets(ref ulong tickets, ref long capacity, long count, string what)
    {
        if (capacity < count * sizeof(int))
        {
            EnsureScratch(ref tickets, ref capacity, count * sizeof(int), what);
            _graph?.Flush(); // recorded kernels run first: the memset is live
            _d.MemsetAsync(tickets, 0, capacity, _stream, what);
        }
        return tickets;
    }

    public void RopeAndStoreKv(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor kCache, DeviceTensor vCache, AttentionParams p,
                               RopeParams rope, DeviceTensor? factors)
    {
        CheckRopeStore(kCache, vCache, rope, p.HeadSize, factors);
        if (!_options.FusedOps)
        {
            RopeAndStoreKvUnfused(q, k, v, kCache, vCache, p, rope, factors);
            return;
        }
        ForgetActivationCopies();
        if (p.Tokens <= 0) return;
        _rt.MakeCurrent();
        ulong pq = Ptr(q), pk = Ptr(k), pv = Ptr(v), kc = Ptr(kCache), vc = Ptr(vCache), pf = factors is { } ft ? Ptr(ft) : 0;
        int f16 = CacheStoreMode(kCache.Type), tokens = p.Tokens, heads = p.Heads, kvHeads = p.KvHeads, headSize = p.HeadSize;
        int dims = rope.Dims, first = p.FirstPosition, neox = rope.Mode == RopeMode.NeoX ? 1 : 0;
        float freqBase = rope.FrequencyBase, freqScale = rope.FrequencyScale;
        void** args = stackalloc void*[] { &pq, &pk, &pv, &kc, &vc, &f16, &tokens, &heads, &kvHeads, &headSize, &dims, &first, &freqBase, &freqScale, &neox, &pf };
        long items = LaunchGeometry.RopeStoreKvItems(tokens, heads, kvHeads, headSize, dims, stores: f16 >= 0);
        LaunchKernel(_ropeStoreKv, LaunchGeometry.Elementwise(items), args, f16 >= 0 ? "rope_store_kv" : "rope_store_kv (rotate)");
        if (f16 < 0) StoreKvBlocks(kCache.Type, pk, pv, kc, vc, tokens, kvHeads * headSize, first, 0);
    }

    /// <summary>
    /// rope_store_kv's f16 argument for a cache of <paramref name="type"/>: 1 F16, 0 F32 (it stores k and v), −1 Q8_0 and Q4_0
    /// (it only rotates; <see cref="StoreKvBlocks"/> quantizes k and v into the cache next).
    /// </summary>
    private static int CacheStoreMode(GgmlType type) => type switch { GgmlType.F16 => 1, GgmlType.Q8_0 or GgmlType.Q4_0 => -1, _ => 0 };

    /// <summary>
    /// store_kv_q8_0 / store_kv_q4_0: k and v [tokens, kvd] F32 (k already rotated) quantized into the block caches of
    /// <paramref name="type"/> at token t's row: firstPosition + t, or with <paramref name="rowInfo"/> (the device's segment
    /// table) rowInfo[2t + 1] + rowInfo[2t]. A warp per 32-element block.
    /// </summary>
    private void StoreKvBlocks(GgmlType type, ulong k, ulong v, ulong kCache, ulong vCache, int tokens, int kvd, int firstPosition, ulong rowInfo)
    {
        long blocks = 2L * tokens * (kvd / 32);
        void** args = stackalloc void*[] { &k, &v, &kCache, &vCache, &tokens, &kvd, &firstPosition, &rowInfo };
        string what = (type == GgmlType.Q4_0, rowInfo != 0) switch // constant labels: no string built per launch
        {
            (false, false) => "store_kv_q8_0",
            (false, true) => "store_kv_q8_0 (segments)",
            (true, false) => "store_kv_q4_0",
            (true, true) => "store_kv_q4_0 (segments)",
        };
        LaunchKernel(_storeKvBlocks[CacheSlot(type)], LaunchGeometry.QuantizeX(blocks), args, what);
    }

    public void MatMulRopeAndStoreKv(DeviceTensor x, long cols, MatMulTarget q, MatMulTarget k, MatMulTarget v, DeviceTensor kCache,
                                     DeviceTensor vCache, AttentionParams p, RopeParams rope, DeviceTensor? factors)
    {
        // A decode step on weights the decode mat-vecs take (UsesMatVec) with adjacent-pair RoPE and an F32 or F16 cache: the
        // mat-vec's epilogue rotates and stores (one launch per weight type instead of the mat-vec(s) and rope_store_kv). Anything
        // else, a Q8_0 or Q4_0 cache included (the epilogue stores single elements; a block's 32 come from 32 warps): the two fused ops,
        // as the default.
        if (!_options.FusedOps || !_options.QkvRope || p.Tokens != 1 || rope.Mode != RopeMode.Normal || kCache.Type is not (GgmlType.F32 or GgmlType.F16)
            || !UsesMatVec(q.Weight.Type, 1) || !UsesMatVec(k.Weight.Type, 1) || !UsesMatVec(v.Weight.Type, 1))
        {
            MatMulShared(x, cols, p.Tokens, [q, k, v]);
            RopeAndStoreKv(q.Output, k.Output, v.Output, kCache, vCache, p, rope, factors);
            return;
        }
        CheckRopeStore(kCache, vCache, rope, p.HeadSize, factors);
        long qd = (long)p.Heads * p.HeadSize, kvd = (long)p.KvHeads * p.HeadSize;
        if (q.Rows != qd || k.Rows != kvd || v.Rows != kvd)
            throw new ArgumentException($"{_backend}: q/k/v projections of {q.Rows}/{k.Rows}/{v.Rows} rows for {p.Heads}/{p.KvHeads} heads of {p.HeadSize}");
        _rt.MakeCurrent();
        var epilogue = new RopeStore
        {
            KCache = Ptr(kCache.Skip(p.FirstPosition * kvd)), VCache = Ptr(vCache.Skip(p.FirstPosition * kvd)), Factors = factors is { } ft ? Ptr(ft) : 0,
            F16 = kCache.Type == GgmlType.F16 ? 1 : 0, Position = p.FirstPosition, HeadSize = p.HeadSize, Dims = rope.Dims,
            FrequencyBase = rope.FrequencyBase, FrequencyScale = rope.FrequencyScale,
        };
        ulong px = Ptr(x);
        int c = checked((int)cols);
        ReadOnlySpan<(MatMulTarget Target, int Role)> all = [(q, RopeStore.Rotate), (k, RopeStore.RotateStoreK), (v, RopeStore.StoreV)];
        var batch = new MatVecTargets();
        ulong xq, xs;
        void** args = stackalloc void*[] { &batch, &c, &xq, &xs, &epilogue };
        for (int i = 0; i < all.Length;) // consecutive targets of one type share a launch (Q4_K_M: q and k, then v in Q6_K)
        {
            var type = all[i].Target.Weight.Type;
            batch = new MatVecTargets();
            epilogue.Roles = 0;
            for (; i < all.Length && all[i].Target.Weight.Type == type; i++)
            {
                var t = all[i].Target;
                batch.Set(batch.Count, Ptr(t.Weight), GgmlTypes.RowSize(type, cols), Ptr(t.Output), t.Rows);
                epilogue.Roles |= RopeStore.Role(batch.Count, all[i].Role);
                batch.Count++;
            }
            (xq, xs) = MatVecInput(type, px, c);
            long rows = batch.TotalRows;
            LaunchKernel(_matVecRope[KernelSlot(type)], LaunchGeometry.MatVecQ8(rows, 1), args, _profile is null ? "matvec_rope" : $"matvec_rope {rows}x{cols} #{KernelSlot(type)} x{batch.Count}");
            for (int j = 0; j < batch.Count; j++) ForgetActivationCopiesIfWritten(batch.Output(j), batch.Rows(j));
        }
    }

    /// <summary>The default of <see cref="IComputeQueue.RopeAndStoreKv"/>: rope q, rope k, convert k and v into the caches.</summary>
    private void RopeAndStoreKvUnfused(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor kCache, DeviceTensor vCache, AttentionParams p,
                                       RopeParams rope, DeviceTensor? factors)
    {
        ulong pf = factors is { } f ? Ptr(f) : 0;
        LaunchRope(q, p.Tokens, p.Heads, p.HeadSize, p.FirstPosition, rope, pf);
        LaunchRope(k, p.Tokens, p.KvHeads, p.HeadSize, p.FirstPosition, rope, pf);
        long kvd = (long)p.KvHeads * p.HeadSize, count = p.Tokens * kvd;
        Convert(k, kCache.Skip(p.FirstPosition * kvd), count);
        Convert(v, vCache.Skip(p.FirstPosition * kvd), count);
    }

    public void RopeAndStoreKvSegments(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor kCache, DeviceTensor vCache,
                                       ReadOnlySpan<SequenceSegment> segments, AttentionParams p, RopeParams rope, DeviceTensor? factors)
    {
        long qd = (long)p.Heads * p.HeadSize, kvd = (long)p.KvHeads * p.HeadSize;
        if (!_options.SegmentKernels || !_options.FusedOps)
        {
            // The interface's default: the single-sequence op per segment, on tensors offset to its rows and its slot.
            foreach (var s in segments)
                RopeAndStoreKv(q.Skip(s.FirstRow * qd), k.Skip(s.FirstRow * kvd), v.Skip(s.FirstRow * kvd), kCache.Skip(s.CacheRow * kvd),
                               vCache.Skip(s.CacheRow * kvd), p with { Tokens = s.Tokens, FirstPosition = s.FirstPosition }, rope, factors);
            return;
        }
        CheckRopeStore(kCache, vCache, rope, p.HeadSize, factors);
        ForgetActivationCopies();
        int tokens = UploadSegmentRows(segments);
        if (tokens == 0) return;
        ulong pq = Ptr(q), pk = Ptr(k), pv = Ptr(v), kc = Ptr(kCache), vc = Ptr(vCache), pf = factors is { } ft ? Ptr(ft) : 0, rows = _segmentRows;
        int f16 = CacheStoreMode(kCache.Type), heads = p.Heads, kvHeads = p.KvHeads, headSize = p.HeadSize;
        int dims = rope.Dims, neox = rope.Mode == RopeMode.NeoX ? 1 : 0;
        float freqBase = rope.FrequencyBase, freqScale = rope.FrequencyScale;
        void** args = stackalloc void*[] { &pq, &pk, &pv, &kc, &vc, &f16, &tokens, &heads, &kvHeads, &headSize, &dims, &rows, &freqBase, &freqScale, &neox, &pf };
        long items = LaunchGeometry.RopeStoreKvItems(tokens, heads, kvHeads, headSize, dims, stores: f16 >= 0);
        LaunchKernel(_ropeStoreKvRows, LaunchGeometry.Elementwise(items), args, f16 >= 0 ? "rope_store_kv (segments)" : "rope_store_kv (segments, rotate)");
        if (f16 < 0) StoreKvBlocks(kCache.Type, pk, pv, kc, vc, tokens, kvHeads * headSize, 0, rows);
    }

    public void AttentionSegments(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output,
                                  ReadOnlySpan<SequenceSegment> segments, AttentionParams p)
    {
        long qd = (long)p.Heads * p.HeadSize, kvd = (long)p.KvHeads * p.HeadSize;
        if (!_options.SegmentKernels)
        {
            foreach (var s in segments)
                Attention(q.Skip(s.FirstRow * qd), kCache.Skip(s.CacheRow * kvd), vCache.Skip(s.CacheRow * kvd), output.Skip(s.FirstRow * qd),
                          p with { Tokens = s.Tokens, FirstPosition = s.FirstPosition });
            return;
        }
        ForgetActivationCopies();
        CheckAttention(kCache, vCache, p);
        int tokens = UploadSegmentRows(segments);
        if (tokens == 0) return;
        ulong pq = Ptr(q), pk = Ptr(kCache), pv = Ptr(vCache), po = Ptr(output), rows = _segmentRows;
        int heads = p.Heads, kvHeads = p.KvHeads, headSize = p.HeadSize;
        float scale = p.Scale;
        // The output projection's int8 batch matmul reads these rows next: each block quantizes its head.
        bool quantize = headSize % 32 == 0 && QuantizesRows(tokens, qd);
        var (xq, xs) = quantize ? QuantizedXScratch(tokens * qd) : (0UL, 0UL);
        void** args = stackalloc void*[] { &pq, &pk, &pv, &po, &rows, &heads, &kvHeads, &headSize, &scale, &xq, &xs };
        LaunchKernel(_attentionRows[AttentionStepSlot(kCache.Type, headSize)], LaunchGeometry.Attention(heads, tokens), args, "attention (segments)");
        if (quantize) RememberQuantizedX(po, tokens * qd, xq, xs);
    }

    /// <summary>
    /// Puts the batch's row table [rows, 2] = (position, cache row of its sequence's position 0) on the device, unless the
    /// device table already holds exactly that (the layers of one step); returns the rows. The copy is queued on the stream,
    /// after the kernels that read the previous table.
    /// </summary>
    private int UploadSegmentRows(ReadOnlySpan<SequenceSegment> segments)
    {
        int rows = 0;
        foreach (var s in segments) rows = Math.Max(rows, s.FirstRow + s.Tokens);
        if (rows == 0) return 0;
        if (_segmentRowsHost.Length < 2 * rows) { _segmentRowsHost = new int[Math.Max(2 * rows, 2 * _segmentRowsHost.Length)]; _segmentRowsCount = -1; }
        var table = _segmentRowsHost.AsSpan(0, 2 * rows);
        bool same = _segmentRowsCount == 2 * rows;
        foreach (var s in segments)
            for (int t = 0; t < s.Tokens; t++)
            {
                int at = 2 * (s.FirstRow + t), position = s.FirstPosition + t;
                same &= table[at] == position && table[at + 1] == s.CacheRow;
                table[at] = position;
                table[at + 1] = s.CacheRow;
            }
        if (same) return rows;
        _rt.MakeCurrent();
        long bytes = (long)table.Length * sizeof(int);
        if (_segmentRowsCapacity < bytes)
        {
            if (_segmentRows != 0) { Synchronize(); _d.Free(_segmentRows, "segment rows"); _segmentRows = 0; } // queued kernels may still read it
            _segmentRowsCapacity = Math.Max(bytes, 4096);
            _segmentRows = _d.Allocate(_segmentRowsCapacity, "segment rows");
        }
        byte* staged = Stage(MemoryMarshal.AsBytes(table));
        _graph?.Flush(); // recorded kernels run first: the copy is live
        _d.CopyHostToDeviceAsync(_segmentRows, staged, bytes, _stream, "segment rows");
        _segmentRowsCount = table.Length;
        return rows;
    }

    /// <summary>One decode mat-vec launch over <paramref name="targets"/> of <paramref name="type"/> weights (for the quantized types x is quantized first unless the scratch already holds it).</summary>
    private void MatVec(GgmlType type, ulong px, int cols, ref MatVecTargets targets)
    {
        int slot = KernelSlot(type);
        var (xq, xs) = MatVecInput(type, px, cols);
        long rows = targets.TotalRows;
        fixed (MatVecTargets* t = &targets)
        {
            void** args = stackalloc void*[] { t, &cols, &xq, &xs };
            LaunchKernel(_matVec[slot], LaunchGeometry.MatVecQ8(rows, 1), args, _profile is null ? "matvec" : $"matvec {rows}x{cols} #{slot} x{targets.Count}{(targets.Accumulate != 0 ? " +=" : "")}");
        }
    }

    /// <summary>
    /// The device address of the tiled copy of Q4_0 matrix <paramref name="w"/> (docs/gpu-kernels.md#tiled-q4_0-weights), made
    /// now if this is its first use; 0 where the mmq kernels read the GGUF bytes instead: the option is off, the matrix has no
    /// tiled layout, it is not in owned device memory (imported pages are read where they are) or the device lacks the room.
    /// Making one allocates, tiles on this stream and waits for it, so that every queue of the device may read it at once.
    /// </summary>
    private ulong TiledCopy(DeviceTensor w, long rows, long cols)
    {
        if (!_tiled || !LaunchGeometry.HasTiledLayout(w.Type, rows, cols) || w.Buffer is not GpuOwnedBuffer owned || owned.Runtime != _rt) return 0;
        ulong source = Ptr(w);
        return owned.Tiled.GetOrCreate(w.Offset, rows, cols, () => MakeTiledCopy(source, rows, cols));
    }

    private ulong MakeTiledCopy(ulong source, long rows, long cols)
    {
        ulong copy = _d.Allocate(TiledWeightCopies.ByteSize(rows, cols), "tiled Q4_0 copy");
        long rowBytes = GgmlTypes.RowSize(GgmlType.Q4_0, cols);
        int r = checked((int)rows), c = checked((int)cols);
        void** args = stackalloc void*[] { &source, &rowBytes, &r, &c, &copy };
        LaunchKernel(_tileQ4_0, LaunchGeometry.TileQ4_0(rows, cols), args, "tile_q4_0");
        Synchronize();
        return copy;
    }

    /// <summary>
    /// The 8-bit scratch holding x [tokens, cols] quantized (each token's row whole 32-element blocks, rows back to back):
    /// launches quantize_x_q8 unless it already holds exactly those rows.
    /// </summary>
    private (ulong Values, ulong Scales) EnsureQuantizedX(ulong px, int cols, int tokens = 1)
    {
        if (cols % 32 != 0) throw new ArgumentException($"{_backend}: a {cols}-element row is not whole 32-element blocks");
        long elements = (long)cols * tokens;
        if (_xq8Source == px && _xq8Elements == elements) return (_xq8Values, _xq8Scales);
        var (xq, xs) = QuantizedXScratch(elements);
        long blocks = elements / 32;
        void** qa = stackalloc void*[] { &px, &xq, &xs, &blocks };
        LaunchKernel(_quantizeX, LaunchGeometry.QuantizeX(blocks), qa, "quantize_x_q8");
        RememberQuantizedX(px, elements, xq, xs);
        return (xq, xs);
    }

    /// <summary>
    /// A prompt-sized matmul on the vendor BLAS (cuBLAS): F32 weights in F32; F16 weights as they are; other types dequantized to F16 into
    /// scratch first. Activations are converted to F16 (tensor cores, F32 accumulation).
    /// </summary>
    private void BlasMatMul(GgmlType type, int slot, ulong pw, long rowBytes, long rows, int cols, ulong px, ulong py, int tokens, bool accumulate)
    {
        _graph?.SuspendUntilStepEnd(); // BLAS runs live
        if (_blasHandle == 0) _blasHandle = _blas!.CreateHandle(_stream);
        int r = checked((int)rows);
        if (type == GgmlType.F32)
        {
            _blas!.RowMajorMatMul(_blasHandle, pw, px, py, r, cols, tokens, f16: false, accumulate);
            return;
        }
        ulong a = pw;
        if (type != GgmlType.F16)
        {
            EnsureScratch(ref _weightsF16, ref _weightsF16Capacity, rows * cols * 2, "F16 weights");
            a = _weightsF16;
            void** da = stackalloc void*[] { &pw, &rowBytes, &rows, &cols, &a };
            LaunchKernel(_dequantizeF16[slot], LaunchGeometry.Dequantize(rows, cols), da, "dequantize_f16");
        }
        ulong xh = GemmInput(px, (long)tokens * cols);
        var events = _profile?.Begin(_stream);
        _blas!.RowMajorMatMul(_blasHandle, a, xh, py, r, cols, tokens, f16: true, accumulate);
        if (events is { } e) _profile!.End("blas gemm f16", e, _stream);
    }

    /// <summary>
    /// Option gemm_batch: the leading targets that one strided batched cuBLAS GEMM can take (at least two with the same quantized
    /// weight type and rows, outputs equally spaced and not overlapping), dequantized side by side into the F16 weight scratch and
    /// multiplied together; returns how many it took (0: none, the caller goes on as before).
    /// </summary>
    private int BlasMatMulBatch(DeviceTensor x, long cols, int tokens, ReadOnlySpan<MatMulTarget> targets)
    {
        if (!_options.GemmBatch || _blas is null || !LaunchGeometry.UsesBlas(tokens) || _options.BatchInvariant || targets.Length < 2) return 0;
        var type = targets[0].Weight.Type;
        long rows = targets[0].Rows;
        if (IsPlain(type) || rows <= 0) return 0;
        ulong y0 = Ptr(targets[0].Output);
        long spacing = (long)(Ptr(targets[1].Output) - y0); // bytes from one output to the next
        int count = 0;
        while (count < targets.Length && targets[count].Weight.Type == type && targets[count].Rows == rows
               && Ptr(targets[count].Output) == y0 + (ulong)(count * spacing))
            count++;
        if (count < 2 || spacing < rows * tokens * sizeof(float) || spacing % sizeof(float) != 0) return 0;
        _rt.MakeCurrent();
        _graph?.SuspendUntilStepEnd(); // BLAS runs live
        if (_blasHandle == 0) _blasHandle = _blas.CreateHandle(_stream);
        int slot = KernelSlot(type), c = checked((int)cols);
        long rowBytes = GgmlTypes.RowSize(type, cols), perWeight = rows * cols;
        EnsureScratch(ref _weightsF16, ref _weightsF16Capacity, count * perWeight * 2, "F16 weights");
        ulong pw = 0, a = 0;
        void** da = stackalloc void*[] { &pw, &rowBytes, &rows, &c, &a };
        for (int k = 0; k < count; k++)
        {
            (pw, a) = (Ptr(targets[k].Weight), _weightsF16 + (ulong)(k * perWeight * 2));
            LaunchKernel(_dequantizeF16[slot], LaunchGeometry.Dequantize(rows, cols), da, "dequantize_f16");
        }
        ulong xh = GemmInput(Ptr(x), tokens * cols);
        var events = _profile?.Begin(_stream);
        _blas.RowMajorMatMulBatched(_blasHandle, _weightsF16, perWeight, xh, y0, spacing / sizeof(float), checked((int)rows), c, tokens, count);
        if (events is { } e) _profile!.End($"blas gemm f16 x{count}", e, _stream);
        for (int k = 0; k < count; k++) ForgetActivationCopiesIfWritten(Ptr(targets[k].Output), rows * tokens);
        return count;
    }

    /// <summary>Forgets which rows the 8-bit scratch and the F16 GEMM input hold: the op about to run may write them.</summary>
    private void ForgetActivationCopies() => (_xq8Source, _xf16Source) = (0, 0);

    /// <summary>
    /// Whether an op writing <paramref name="rows"/> activation rows also writes them as F16 (in the GEMM-input scratch), for the
    /// prompt GEMM on cuBLAS that reads them next (option gemm_input fused; docs/gpu-kernels.md#prompt-gemm-inputs).
    /// </summary>
    private bool WritesGemmInput(int rows) => _blas is not null && _options.GemmInputFused && LaunchGeometry.UsesBlas(rows) && !_options.BatchInvariant;

    /// <summary>The F16 GEMM-input scratch grown to <paramref name="n"/> elements (forgetting what it held if it moved).</summary>
    private ulong GemmInputScratch(long n)
    {
        ulong before = _activationsF16;
        EnsureScratch(ref _activationsF16, ref _activationsF16Capacity, n * 2, "F16 activations");
        if (_activationsF16 != before) _xf16Source = 0;
        return _activationsF16;
    }

    /// <summary>Notes that the GEMM-input scratch holds the <paramref name="n"/> floats at <paramref name="source"/> as F16.</summary>
    private void RememberGemmInput(ulong source, long n) => (_xf16Source, _xf16Elements) = (source, n);

    /// <summary>x [n] as F16 for a cuBLAS GEMM: the scratch as it is when it holds exactly those floats, else converted now.</summary>
    private ulong GemmInput(ulong px, long n)
    {
        if (_xf16Source == px && _xf16Elements == n) return _activationsF16;
        ulong xh = GemmInputScratch(n);
        void** ca = stackalloc void*[] { &px, &xh, &n };
        LaunchKernel(_convertF16, LaunchGeometry.Elementwise(n), ca, "convert_f32_f16");
        if (_options.GemmInputFused) RememberGemmInput(px, n);
        return xh;
    }

    /// <summary>Makes <paramref name="ptr"/> hold at least <paramref name="bytes"/>; waits for the stream before freeing an old buffer that queued work may read.</summary>
    private void EnsureScratch(ref ulong ptr, ref long capacity, long bytes, string what)
    {
        if (capacity >= bytes) return;
        if (ptr != 0)
        {
            Synchronize();
            _d.Free(ptr, $"{what} scratch");
            ptr = 0;
            capacity = 0;
        }
        long size = TensorPadding.AlignUp(bytes, 1 << 20);
        ptr = _d.Allocate(size, $"{what} scratch");
        capacity = size;
    }

    public void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope)
        => LaunchRope(x, tokens, heads, headSize, firstPosition, rope, 0);

    public void RopeWithFactors(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope, DeviceTensor factors)
    {
        if (factors.Type != GgmlType.F32) throw new ArgumentException($"{_backend}: RoPE frequency factors must be F32, not {factors.Type}", nameof(factors));
        LaunchRope(x, tokens, heads, headSize, firstPosition, rope, Ptr(factors));
    }

    /// <summary>The rope kernel; <paramref name="factors"/> = 0 for plain RoPE, else the device address of F32 [dims/2] divisors of the angles.</summary>
    private void LaunchRope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope, ulong factors)
    {
        ForgetActivationCopies();
        CheckRope(rope, headSize);
        long pairs = (long)tokens * heads * (rope.Dims / 2);
        if (pairs == 0) return;
        _rt.MakeCurrent();
        ulong px = Ptr(x);
        int dims = rope.Dims, neox = rope.Mode == RopeMode.NeoX ? 1 : 0;
        float freqBase = rope.FrequencyBase, freqScale = rope.FrequencyScale;
        void** args = stackalloc void*[] { &px, &tokens, &heads, &headSize, &dims, &firstPosition, &freqBase, &freqScale, &neox, &factors };
        LaunchKernel(_rope, LaunchGeometry.Elementwise(pairs), args, "rope");
    }

    /// <summary>What the fused rotate-and-store ops require of the caches, the RoPE parameters and the factors.</summary>
    private void CheckRopeStore(DeviceTensor kCache, DeviceTensor vCache, RopeParams rope, int headSize, DeviceTensor? factors)
    {
        if (kCache.Type != vCache.Type || !Supports(ComputeOp.Attention, kCache.Type))
            throw new NotSupportedException($"{_backend}: K/V caches of {kCache.Type}/{vCache.Type} ({string.Join(", ", KernelSource.CacheTypes.Where(t => Supports(ComputeOp.Attention, t)))} here, both the same)");
        if (factors is { Type: not GgmlType.F32 } f) throw new ArgumentException($"{_backend}: RoPE frequency factors must be F32, not {f.Type}", nameof(factors));
        CheckRope(rope, headSize);
        CheckBlockCache(kCache, vCache, headSize);
    }

    /// <summary>
    /// What the kernels require of a Q8_0 or Q4_0 cache (docs/gpu-kernels.md#q8_0-kv-cache): heads of whole 32-element blocks (so
    /// every head starts a block) and 2-byte aligned tensors (the blocks' f16 scales, the attention's u16 loads). Nothing for F32 and F16.
    /// </summary>
    private void CheckBlockCache(DeviceTensor kCache, DeviceTensor vCache, int headSize)
    {
        if (kCache.Type is not (GgmlType.Q8_0 or GgmlType.Q4_0)) return;
        if (headSize % 32 != 0) throw new NotSupportedException($"{_backend}: a {kCache.Type} KV cache needs a head size that is a multiple of 32, not {headSize}");
        if (((Ptr(kCache) | Ptr(vCache)) & 1) != 0) throw new ArgumentException($"{_backend}: {kCache.Type} K/V caches must be 2-byte aligned");
    }

    private void CheckRope(RopeParams rope, int headSize)
    {
        if (rope.Dims <= 0 || rope.Dims > headSize || rope.Dims % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(rope), $"{_backend}: RoPE dims {rope.Dims} must be even and in 1..{headSize}");
    }

    /// <summary>What both attention kernels (one sequence, and a batch's segments) require of the caches and the heads.</summary>
    private void CheckAttention(DeviceTensor kCache, DeviceTensor vCache, AttentionParams p)
    {
        if (kCache.Type != vCache.Type) throw new ArgumentException($"{_backend}: K cache is {kCache.Type}, V cache is {vCache.Type}; they must match");
        if (!Supports(ComputeOp.Attention, kCache.Type)) throw new NotSupportedException($"{_backend}: attention over a {kCache.Type} cache (the q8_0_cache / q4_0_cache options keep those on the device)");
        if (p.HeadSize <= 0 || p.HeadSize > LaunchGeometry.AttentionMaxHeadSize)
            throw new NotSupportedException($"{_backend}: attention head size {p.HeadSize} (1..{LaunchGeometry.AttentionMaxHeadSize} supported)");
        CheckBlockCache(kCache, vCache, p.HeadSize);
        if (p.KvHeads <= 0 || p.Heads % p.KvHeads != 0) throw new ArgumentException($"{_backend}: {p.Heads} heads are not a multiple of {p.KvHeads} KV heads");
    }

    public void Attention(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output, AttentionParams p)
    {
        ForgetActivationCopies();
        CheckAttention(kCache, vCache, p);
        if (p.Tokens <= 0) return;
        _rt.MakeCurrent();
        ulong pq = Ptr(q), pk = Ptr(kCache), pv = Ptr(vCache), po = Ptr(output);
        int first = p.FirstPosition, heads = p.Heads, kvHeads = p.KvHeads, headSize = p.HeadSize;
        float scale = p.Scale;
        int step = AttentionStepSlot(kCache.Type, headSize);
        int chunk = LaunchGeometry.AttentionChunk(first + 1, heads, _attentionSplitResident[step], _options.AttentionChunk);
        nint mma = AttentionMmaKernel(kCache, p, pk | pv);
        // A decode step's output goes to the output projection's int8 mat-vec next, a short chunk's to the int8 batch matmul:
        // each block of the per-token kernels quantizes its head.
        long rowElements = (long)heads * headSize, n = rowElements * p.Tokens;
        bool quantize = headSize % 32 == 0 && mma == 0 && QuantizesOutput(p.Tokens, rowElements);
        var (xq, xs) = quantize ? QuantizedXScratch(n) : (0UL, 0UL);
        if (mma != 0)
        {
            // A prompt: 64 tokens of one head per block, K and V read once per block, products on the tensor cores.
            // The output projection's cuBLAS GEMM reads the rows next: with gemm_input fused the kernel writes them as F16 too.
            int tokens = p.Tokens;
            ulong oh = WritesGemmInput(tokens) ? GemmInputScratch(n) : 0;
            void** mmaArgs = stackalloc void*[] { &pq, &pk, &pv, &po, &first, &tokens, &heads, &kvHeads, &scale, &oh };
            LaunchKernel(mma, LaunchGeometry.AttentionMma(heads, tokens), mmaArgs, oh != 0 ? "attention (prompt, mma, +f16)" : "attention (prompt, mma)");
            if (oh != 0) RememberGemmInput(po, n);
        }
        else if (p.Tokens == 1 && chunk > 0 && first + 1 > chunk)
        {
            // A long history: heads x splits blocks, each over `chunk` positions; the last one of a head combines them.
            int splits = LaunchGeometry.AttentionSplits(first + 1, chunk);
            EnsureScratch(ref _attentionPartials, ref _attentionPartialsCapacity, (long)heads * splits * (headSize + 2) * sizeof(float), "attention partials");
            ulong partials = _attentionPartials, tickets = ZeroedTickets(ref _attentionTickets, ref _attentionTicketsCapacity, heads, "attention tickets");
            void** splitArgs = stackalloc void*[] { &pq, &pk, &pv, &po, &first, &heads, &kvHeads, &headSize, &scale, &xq, &xs, &partials, &tickets, &chunk };
            LaunchKernel(_attentionSplit[step], LaunchGeometry.AttentionSplit(heads, splits), splitArgs, "attention (decode, split)");
        }
        else
        {
            void** args = stackalloc void*[] { &pq, &pk, &pv, &po, &first, &heads, &kvHeads, &headSize, &scale, &xq, &xs };
            var kernel = p.Tokens == 1 ? _attentionDecode[step] : _attention[CacheSlot(kCache.Type)];
            LaunchKernel(kernel, LaunchGeometry.Attention(p.Heads, p.Tokens), args, p.Tokens == 1 ? "attention (decode)" : "attention");
        }
        if (quantize) RememberQuantizedX(po, n, xq, xs);
    }

    /// <summary>
    /// The tensor-core prompt attention (kernels.cu attention_mma_{f16,q8_0}_d*) for this call, or 0: the <c>flash_attn</c> option on an
    /// sm_80+ GPU, at least <see cref="LaunchGeometry.AttentionMmaMinTokens"/> tokens, an F16 cache with 16-byte aligned rows (read as
    /// 16-byte words) or a Q8_0 cache with 2-byte aligned ones (its blocks decoded to F16 as they are staged), head size 64 or 128,
    /// and not in batch-invariant mode (whose prompts take the same per-token kernel as its decode steps). An F32 cache's prompts
    /// take the per-token kernel (attention_f32).
    /// </summary>
    private nint AttentionMmaKernel(DeviceTensor kCache, AttentionParams p, ulong cachePointers)
    {
        if (_options.BatchInvariant || p.Tokens < LaunchGeometry.AttentionMmaMinTokens || !KernelSource.MmaCacheTypes.Contains(kCache.Type)
            || (cachePointers & (kCache.Type == GgmlType.F16 ? 15UL : 1UL)) != 0)
            return 0;
        int slot = CacheSlot(kCache.Type);
        return p.HeadSize switch { 64 => _attentionMma64[slot], 128 => _attentionMma128[slot], _ => 0 };
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n)
        // A decode step's gate row goes to the down projection's int8 mat-vec next: quantize it here.
        => SiluMul(gate, up, y, n, FusesQuantization(n), gemmRows: 0);

    /// <summary>
    /// y = silu(gate) · up over n elements; <paramref name="quantize"/> also writes y's 8-bit blocks for the int8 matmul that reads
    /// it next; y as F16 too when <paramref name="gemmRows"/> rows (tokens; 0 = not known) make that matmul a cuBLAS GEMM.
    /// </summary>
    private void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n, bool quantize, int gemmRows)
    {
        ForgetActivationCopies();
        if (n <= 0) return;
        _rt.MakeCurrent();
        ulong pg = Ptr(gate), pu = Ptr(up), py = Ptr(y);
        var (xq, xs) = quantize ? QuantizedXScratch(n) : (0UL, 0UL);
        ulong yh = gemmRows > 0 && WritesGemmInput(gemmRows) ? GemmInputScratch(n) : 0;
        void** args = stackalloc void*[] { &pg, &pu, &py, &n, &xq, &xs, &yh };
        LaunchKernel(_siluMul, LaunchGeometry.Elementwise(n), args, yh != 0 ? "silu_mul (+f16)" : "silu_mul");
        if (quantize) RememberQuantizedX(py, n, xq, xs);
        if (yh != 0) RememberGemmInput(py, n);
    }

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor y, long n)
    {
        ForgetActivationCopies();
        if (n <= 0) return;
        _rt.MakeCurrent();
        ulong pa = Ptr(a), pb = Ptr(b), py = Ptr(y);
        void** args = stackalloc void*[] { &pa, &pb, &py, &n };
        LaunchKernel(_add, LaunchGeometry.Elementwise(n), args, "add");
    }

    public void AddBias(DeviceTensor x, DeviceTensor bias, int rows, int n)
    {
        ForgetActivationCopies();
        long total = (long)rows * n;
        if (total <= 0) return;
        _rt.MakeCurrent();
        ulong px = Ptr(x), pb = Ptr(bias);
        void** args = stackalloc void*[] { &px, &pb, &total, &n };
        LaunchKernel(_addBias, LaunchGeometry.Elementwise(total), args, "add_bias");
    }

    public void Convert(DeviceTensor src, DeviceTensor dst, long n)
    {
        ForgetActivationCopies();
        if (n <= 0) return;
        if (!Supports(ComputeOp.Convert, dst.Type)) throw new NotSupportedException($"{_backend}: Convert to {dst.Type}");
        var kernel = dst.Type switch
        {
            GgmlType.F32 => _copyF32,
            GgmlType.F16 => _convertF16,
            GgmlType.Q8_0 or GgmlType.Q4_0 => _convertBlocks[CacheSlot(dst.Type)],
            _ => throw new NotSupportedException($"{_backend}: Convert to {dst.Type}"),
        };
        _rt.MakeCurrent();
        ulong ps = Ptr(src), pd = Ptr(dst);
        if (dst.Type is GgmlType.Q8_0 or GgmlType.Q4_0)
        {
            // A block KV cache's rows (the default of RopeAndStoreKv, or fused ops off): whole 34- or 18-byte blocks, a warp each.
            if (n % 32 != 0) throw new ArgumentException($"{_backend}: Convert to {dst.Type} stores whole 32-element blocks, not {n} elements", nameof(n));
            if (pd % 2 != 0) throw new ArgumentException($"{_backend}: a {dst.Type} destination must be 2-byte aligned (its blocks' f16 scales)", nameof(dst));
            long blocks = n / 32;
            void** qa = stackalloc void*[] { &ps, &pd, &blocks };
            LaunchKernel(kernel, LaunchGeometry.QuantizeX(blocks), qa, dst.Type == GgmlType.Q4_0 ? "convert (q4_0)" : "convert (q8_0)");
            return;
        }
        void** args = stackalloc void*[] { &ps, &pd, &n };
        LaunchKernel(kernel, LaunchGeometry.Elementwise(n), args, "convert");
    }

    public void Upload(ReadOnlySpan<float> source, DeviceTensor dst)
    {
        ForgetActivationCopies();
        if (source.IsEmpty) return;
        _rt.MakeCurrent();
        ulong pd = Ptr(dst);
        byte* staged = Stage(MemoryMarshal.AsBytes(source));
        _graph?.Flush(); // recorded kernels run first: the copy is live
        _d.CopyHostToDeviceAsync(pd, staged, (long)source.Length * sizeof(float), _stream, "upload");
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
        _graph?.Flush(); // the step's recorded kernels run first; the copy below is live
        // Stream order puts this copy after every queued upload that still reads the arena, so the arena's start can be reused.
        if (bytes > 0) _d.CopyDeviceToHostAsync(_staging, ps, bytes, _stream);
        Synchronize();
        new ReadOnlySpan<byte>(_staging, (int)bytes).CopyTo(MemoryMarshal.AsBytes(destination));
    }

    /// <summary>
    /// A copy into another GPU queue of the same vendor (another device, or another virtual device of this GPU) through the
    /// binding's peer copy (docs/multi-gpu.md#transfers). Both ways ordered with events: the copy waits for the destination
    /// stream's earlier work (which may still read <paramref name="dst"/>), and the destination's later work waits for the copy.
    /// Step graphs of both queues are flushed first: their recorded kernels run before the copy and the waits. False for any other queue.
    /// </summary>
    public bool CopyTo(DeviceTensor src, IComputeQueue destination, DeviceTensor dst, long bytes)
    {
        if (destination is not GpuComputeQueue other || other._rt == _rt || !_d.CanCopyToPeer(other._d) || bytes <= 0) return false;
        ulong source = Ptr(src), target = other.Ptr(dst); // each checked against its own device, before anything is enqueued
        other._rt.MakeCurrent();
        other._graph?.Flush();
        other._transferEvent = other._transferEvent != 0 ? other._transferEvent : other._d.CreateEvent();
        other._d.RecordEvent(other._transferEvent, other._stream);

        _rt.MakeCurrent();
        _graph?.Flush();
        _transferEvent = _transferEvent != 0 ? _transferEvent : _d.CreateEvent();
        _d.StreamWaitEvent(_stream, other._transferEvent);
        if (!_d.TryCopyToPeerAsync(target, other._d, source, bytes, _stream))
            throw new InvalidOperationException($"{_backend}: the peer copy was refused after CanCopyToPeer said yes");
        _d.RecordEvent(_transferEvent, _stream);

        other._rt.MakeCurrent();
        other._d.StreamWaitEvent(other._stream, _transferEvent);
        other.ForgetActivationCopies(); // dst changed behind the destination's back
        return true;
    }

    public void Synchronize()
    {
        _rt.MakeCurrent();
        _graph?.EndStep();
        long waitStart = _hostProfile is null ? 0 : GpuHostProfile.Now;
        _d.SynchronizeStream(_stream);
        _hostProfile?.Waited(waitStart);
        _profile?.Collect();
        _stagingUsed = 0; // the stream is idle: nothing reads the arena any more
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _rt.MakeCurrent();
        try { _graph?.Flush(); } catch (GpuException) { /* disposing: the work is abandoned */ }
        try { _d.SynchronizeStream(_stream); } catch (GpuException) { /* disposing */ }
        _graph?.Dispose();
        _profile?.Collect();
        _profile?.Dispose();
        if (_hostProfile is not null) Console.Error.Write(_hostProfile.Report());
        if (_rowIds != 0) _d.FreeQuietly(_rowIds);
        if (_segmentRows != 0) _d.FreeQuietly(_segmentRows);
        foreach (ulong scratch in new[] { _xq8, _xq8Out, _swiGluTickets, _weightsF16, _activationsF16, _attentionPartials, _attentionTickets, _mmqPartials, _mmqTickets }) if (scratch != 0) _d.FreeQuietly(scratch);
        if (_blasHandle != 0) _blas!.DestroyHandle(_blasHandle);
        if (_staging != null) _d.FreePinned(_staging);
        if (_transferEvent != 0) _d.DestroyEvent(_transferEvent);
        _d.DestroyStreamQuietly(_stream);
    }

    /// <summary>Index of a weight type's kernels in the lookup tables; throws for types without kernels.</summary>
    private int KernelSlot(GgmlType type) => type switch
    {
        GgmlType.F32 => 0,
        GgmlType.F16 => 1,
        GgmlType.BF16 => 2,
        GgmlType.Q8_0 => 3,
        GgmlType.Q4_0 => 4,
        GgmlType.Q4_K => 5,
        GgmlType.Q5_K => 6,
        GgmlType.Q6_K => 7,
        _ => throw new NotSupportedException($"{_backend}: no kernel reads {type} weights (Supports() says so)"),
    };

    /// <summary>Index of a KV cache type's attention kernels: its place in <see cref="KernelSource.CacheTypes"/>; throws for other types.</summary>
    private int CacheSlot(GgmlType type)
    {
        for (int i = 0; i < KernelSource.CacheTypes.Count; i++)
            if (KernelSource.CacheTypes[i] == type) return i;
        throw new NotSupportedException($"{_backend}: no attention kernel reads a {type} cache (Supports() says so)");
    }

    /// <summary>Index of the one-token attention kernels (decode, split) for a cache type and head size: the narrow (*_h128) ones
    /// where the head fits them (<see cref="LaunchGeometry.AttentionStepKernelName"/>).</summary>
    private int AttentionStepSlot(GgmlType type, int headSize) => CacheSlot(type) * 2 + (headSize <= LaunchGeometry.AttentionNarrowHeadSize ? 1 : 0);

    /// <summary>Device address of a tensor; the buffer must belong to this device.</summary>
    private ulong Ptr(DeviceTensor t)
    {
        if (t.Buffer is not GpuBuffer b || b.Runtime != _rt)
            throw new ArgumentException($"{_backend}: buffer '{t.Buffer.Name}' does not belong to {_rt.Name} ({_rt.Facts.StableId})");
        if (t.Offset < 0 || t.Offset > b.Size) throw new ArgumentOutOfRangeException(nameof(t), $"{_backend}: offset {t.Offset} is outside buffer '{b.Name}' ({b.Size} B)");
        return b.DevicePointer + (ulong)t.Offset;
    }

    private void LaunchKernel(nint function, Launch launch, void** args, string what)
    {
        long launchStart = _hostProfile is null ? 0 : GpuHostProfile.Now; // no clock read per launch unless profiling
        if (_graph is null || !_graph.TryRecord(function, launch, args))
        {
            var events = _profile?.Begin(_stream);
            _d.Launch(function, launch, _stream, args, _programmaticLaunch, what);
            if (events is { } e) _profile!.End(what, e, _stream);
        }
        _hostProfile?.Launched(launchStart);
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
        if (_staging != null) _d.FreePinned(_staging);
        _staging = null;
        _staging = (byte*)_d.AllocatePinned(bytes, "staging");
        _stagingCapacity = bytes;
        _stagingUsed = 0;
    }

    private void GrowRowIds(long bytes)
    {
        if (_rowIds != 0)
        {
            Synchronize(); // a queued get_rows may still read the old ids
            _d.Free(_rowIds, "row ids");
            _rowIds = 0;
        }
        long capacity = Math.Max(bytes, 4096);
        _rowIds = _d.Allocate(capacity, "row ids");
        _rowIdsCapacity = capacity;
    }
}

using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu;

/// <summary>
/// The CPU's op queue: every op runs synchronously on the calling thread plus the worker pool, so
/// <see cref="Synchronize"/> has nothing to wait for. Scratch (quantized activations, RoPE tables, attention scores)
/// is allocated once and grown on demand, so steady-state decoding allocates nothing.
/// </summary>
internal sealed unsafe class CpuComputeQueue : IComputeQueue
{
    private readonly CpuWorkerPool _pool;
    private readonly MatMulScratch _matMulScratch = new();
    private readonly AttentionJob _attention;
    private readonly CpuOpProfile? _profile = CpuOpProfile.FromEnvironment();
    private int[] _positions = new int[64];
    private float[] _ropeTable = new float[64];
    /// <summary>What <see cref="_ropeTable"/> was built for: first position, tokens, parameters, frequency factors.</summary>
    private (int, int, RopeParams, nint)? _ropeKey;

    private readonly bool _repack;

    /// <param name="repack">Keep Q4_0 weight matrices repacked (<see cref="RepackedWeights"/>, on the buffer that holds them) and
    /// run their matmuls from that copy.</param>
    public CpuComputeQueue(CpuDevice device, int threads, bool repack = true)
    {
        Device = device;
        _pool = new CpuWorkerPool(threads);
        _attention = new AttentionJob(threads);
        _repack = repack;
    }

    public IBackendDevice Device { get; }

    public bool Supports(ComputeOp op, GgmlType type) => op switch
    {
        ComputeOp.MatMul => QuantDot.IsSupported(type),
        ComputeOp.GetRows => RowDequantizer.IsSupported(type),
        // The KV cache types (docs/batching.md#quantized-kv-cache); Convert also copies F32 activations (the logits rows' compaction).
        ComputeOp.Attention or ComputeOp.Convert => type is GgmlType.F32 or GgmlType.F16 or GgmlType.Q8_0 or GgmlType.Q4_0,
        _ => type == GgmlType.F32,
    };

    public void GetRows(DeviceTensor table, long rowLength, ReadOnlySpan<int> rows, DeviceTensor dst)
    {
        long rowBytes = GgmlTypes.RowSize(table.Type, rowLength);
        byte* src = Ptr(table);
        float* y = F32(dst);
        for (int i = 0; i < rows.Length; i++)
            RowDequantizer.DequantizeRow(table.Type, src + rows[i] * rowBytes, y + i * rowLength, rowLength);
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor y, int rows, int n, float eps)
    {
        long start = CpuOpProfile.Start(_profile);
        RowOps.RmsNormRows(F32(x), F32(weight), F32(y), n, 0, rows, eps);
        _profile?.Stop(ComputeOp.RmsNorm, start);
    }

    public void MatMul(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens)
    {
        byte* pw = Ptr(w);
        if (_repack && RepackedWeights.Supports(w.Type, wRows, wCols))
        {
            // The first matmul on a matrix makes its repacked copy (docs/batching.md#cpu-weights-repacked-once); later ones find it.
            long repackStart = CpuOpProfile.Start(_profile);
            var packed = ((ICpuBuffer)w.Buffer).Repacked.GetOrCreate(w.Offset, pw, w.Type, wRows, wCols, _pool, out bool created);
            if (created) _profile?.StopRepack(packed.Bytes, repackStart);
            long start = CpuOpProfile.Start(_profile);
            Kernels.MatMul.Run(packed, pw, F32(x), tokens, F32(y), _pool, _matMulScratch);
            _profile?.StopMatMul(w.Type, wRows, wCols, tokens, start);
        }
        else
        {
            long start = CpuOpProfile.Start(_profile);
            Kernels.MatMul.Run(w.Type, pw, wRows, wCols, F32(x), tokens, F32(y), _pool, _matMulScratch);
            _profile?.StopMatMul(w.Type, wRows, wCols, tokens, start);
        }
    }

    public void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope)
        => Rope(x, tokens, heads, headSize, firstPosition, rope, factors: null);

    public void RopeWithFactors(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope, DeviceTensor factors)
    {
        if (factors.Type != GgmlType.F32) throw new ArgumentException($"RoPE frequency factors must be F32, not {factors.Type}", nameof(factors));
        Rope(x, tokens, heads, headSize, firstPosition, rope, F32(factors));
    }

    private void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope, float* factors)
    {
        long start = CpuOpProfile.Start(_profile);
        var mode = rope.Mode == Abstractions.RopeMode.NeoX ? Kernels.RopeMode.NeoX : Kernels.RopeMode.Normal;
        // q and k of every layer rotate the same positions with the same parameters: the table is built once per batch.
        var key = (firstPosition, tokens, rope, (nint)factors);
        if (key != _ropeKey)
        {
            if (_positions.Length < tokens) _positions = new int[Math.Max(tokens, 2 * _positions.Length)];
            for (int t = 0; t < tokens; t++) _positions[t] = firstPosition + t;
            long tableLength = Kernels.Rope.TableLength(tokens, rope.Dims);
            if (_ropeTable.Length < tableLength) _ropeTable = new float[Math.Max(tableLength, 2L * _ropeTable.Length)];
            _ropeKey = null; // not valid until the table is complete (PrecomputeCosSin may throw on bad parameters)
            fixed (float* table = _ropeTable)
                Kernels.Rope.PrecomputeCosSin(_positions.AsSpan(0, tokens), rope.Dims, rope.FrequencyBase, rope.FrequencyScale, mode, factors, table);
            _ropeKey = key;
        }
        fixed (float* table = _ropeTable)
            Kernels.Rope.Apply(F32(x), heads, headSize, rope.Dims, mode, table, 0, tokens);
        _profile?.Stop(ComputeOp.Rope, start);
    }

    public void Attention(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output, AttentionParams p)
    {
        if (kCache.Type != vCache.Type) throw new ArgumentException("K and V caches must have the same type");
        long start = CpuOpProfile.Start(_profile);
        _attention.Set(F32(q), Ptr(kCache), Ptr(vCache), CacheType(kCache.Type), F32(output), p);
        _attention.Run(_pool);
        _profile?.Stop(ComputeOp.Attention, start);
    }

    /// <summary>Every segment's attention in one staging pass and one compute pass (the interface's default runs two per segment).</summary>
    public void AttentionSegments(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output,
                                  ReadOnlySpan<SequenceSegment> segments, AttentionParams p)
    {
        if (kCache.Type != vCache.Type) throw new ArgumentException("K and V caches must have the same type");
        if (segments.Length == 0) return;
        long start = CpuOpProfile.Start(_profile);
        long qd = (long)p.Heads * p.HeadSize, kvd = (long)p.KvHeads * p.HeadSize;
        _attention.Begin(CacheType(kCache.Type), p, segments.Length);
        foreach (var s in segments)
            _attention.Add(F32(q.Skip(s.FirstRow * qd)), Ptr(kCache.Skip(s.CacheRow * kvd)), Ptr(vCache.Skip(s.CacheRow * kvd)),
                           F32(output.Skip(s.FirstRow * qd)), s.Tokens, s.FirstPosition);
        _attention.End();
        _attention.Run(_pool);
        _profile?.Stop(ComputeOp.Attention, start);
    }

    /// <summary>The attention kernels' name for a cache tensor's type.</summary>
    internal static KvCacheType CacheType(GgmlType type) => type switch
    {
        GgmlType.F32 => KvCacheType.F32,
        GgmlType.F16 => KvCacheType.F16,
        GgmlType.Q8_0 => KvCacheType.Q8_0,
        GgmlType.Q4_0 => KvCacheType.Q4_0,
        _ => throw new NotSupportedException($"cpu: a KV cache of {type} is not supported (F32, F16, Q8_0 and Q4_0 are)"),
    };

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n)
    {
        long start = CpuOpProfile.Start(_profile);
        RowOps.SiluMul(F32(gate), F32(up), F32(y), checked((int)n));
        _profile?.Stop(ComputeOp.SiluMul, start);
    }

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor y, long n)
    {
        long start = CpuOpProfile.Start(_profile);
        RowOps.Add(F32(a), F32(b), F32(y), checked((int)n));
        _profile?.Stop(ComputeOp.Add, start);
    }

    public void AddBias(DeviceTensor x, DeviceTensor bias, int rows, int n)
    {
        float* px = F32(x), pb = F32(bias);
        for (int r = 0; r < rows; r++) RowOps.Add(px + (long)r * n, pb, px + (long)r * n, n);
    }

    public void Convert(DeviceTensor src, DeviceTensor dst, long n)
    {
        long start = CpuOpProfile.Start(_profile);
        ConvertCore(src, dst, n);
        _profile?.Stop(ComputeOp.Convert, start);
    }

    private static void ConvertCore(DeviceTensor src, DeviceTensor dst, long n)
    {
        int count = checked((int)n);
        switch (dst.Type)
        {
            case GgmlType.F16: Float16Conversion.ToHalf(F32(src), (Half*)Ptr(dst), count); break;
            case GgmlType.F32: Buffer.MemoryCopy(F32(src), Ptr(dst), n * sizeof(float), n * sizeof(float)); break;
            case GgmlType.Q8_0 or GgmlType.Q4_0: CacheQuantizer.Quantize(dst.Type, F32(src), Ptr(dst), n); break; // whole 32-element blocks
            default: throw new NotSupportedException($"cpu: Convert to {dst.Type}");
        }
    }

    public void Upload(ReadOnlySpan<float> source, DeviceTensor dst) => source.CopyTo(new Span<float>(F32(dst), source.Length));

    public void Download(DeviceTensor src, Span<float> destination) => new ReadOnlySpan<float>(F32(src), destination.Length).CopyTo(destination);

    public void Synchronize() { }

    public void Dispose()
    {
        _profile?.Report(Console.Error);
        _pool.Dispose();
        _matMulScratch.Dispose();
        _attention.Dispose();
    }

    /// <summary>Host address of a tensor in a CPU buffer (owned memory or a mapping used in place).</summary>
    private static byte* Ptr(DeviceTensor t)
    {
        if (t.Buffer is not (CpuOwnedBuffer or CpuImportedBuffer))
            throw new ArgumentException($"cpu: buffer '{t.Buffer.Name}' does not belong to the CPU backend");
        return (byte*)t.Buffer.DeviceAddress + t.Offset;
    }

    private static float* F32(DeviceTensor t) => (float*)Ptr(t);

    /// <summary>
    /// Attention in two parallel passes (<see cref="StagedAttention"/>) over one or several sequence segments: staging converts each
    /// segment's KV heads' visible keys and values to float once (claims are segments × KV heads × 64-position chunks), then compute
    /// claims are segments × query heads. Several sequences decoding together thus cost two passes per layer, not two per sequence
    /// (docs/batching.md#backends), and each (token, head) is computed exactly as when its sequence runs alone. Each worker has its
    /// own score scratch; the staging buffers are shared and grow to the largest batch seen.
    /// A batch of one-token segments (decode steps) takes one pass instead, with no staging buffers: claims are segments × KV
    /// heads, each computing every query head of its group from tiles of the cache (<see cref="StagedAttention.DecodeKvHead"/>,
    /// the same bits), when there are at least as many claims as workers (fewer: the staged passes, which split positions too).
    /// </summary>
    private sealed class AttentionJob(int threads) : CpuParallelJob, IDisposable
    {
        private const int StageChunk = 64;

        /// <summary>One segment: its q/output rows, its slot's caches, and where its staging and its staging claims start.</summary>
        private struct Segment
        {
            public float* Q, Out;
            public byte* K, V;
            public int Tokens, FirstPosition, Capacity, Visible, Chunks, FirstStageClaim;
            public long StageOffset;
        }

        private readonly float[][] _scores = Enumerable.Range(0, threads).Select(_ => new float[256]).ToArray();
        private Segment[] _segments = new Segment[4];
        private int _count, _stageClaims;
        private float* _keysT, _values;
        private long _stageLength;
        private KvCacheType _type;
        private AttentionParams _p;
        private int _next;
        private bool _staging, _byKvHead;
        private float[] _decodeScratch = [];
        private readonly int _threads = threads;

        public void Set(float* q, byte* k, byte* v, KvCacheType type, float* output, AttentionParams p)
        {
            Begin(type, p, 1);
            Add(q, k, v, output, p.Tokens, p.FirstPosition);
            End();
        }

        /// <summary>Starts a batch of <paramref name="segments"/> segments; <see cref="Add"/> each, then <see cref="End"/>.</summary>
        public void Begin(KvCacheType type, AttentionParams p, int segments)
        {
            // A quantized cache is read a head at a time from whole blocks: refuse other shapes here, not in a worker.
            if (Kernels.Attention.IsQuantized(type)) Kernels.Attention.ValidateBlocks(type, p.HeadSize, p.KvHeads * p.HeadSize);
            _type = type; _p = p;
            _count = 0;
            _stageClaims = 0;
            if (_segments.Length < segments) _segments = new Segment[Math.Max(segments, 2 * _segments.Length)];
        }

        public void Add(float* q, byte* k, byte* v, float* output, int tokens, int firstPosition)
        {
            Kernels.Attention.Validate(tokens, firstPosition, _p.Heads, _p.KvHeads, _p.HeadSize, _p.KvHeads * _p.HeadSize, 0, _p.Heads);
            ref var s = ref _segments[_count];
            s.Q = q; s.K = k; s.V = v; s.Out = output; s.Tokens = tokens; s.FirstPosition = firstPosition;
            s.Capacity = StagedAttention.Capacity(tokens, firstPosition);
            s.Visible = firstPosition + tokens;
            s.Chunks = (s.Visible + StageChunk - 1) / StageChunk;
            s.FirstStageClaim = _stageClaims;
            s.StageOffset = _count == 0 ? 0 : _segments[_count - 1].StageOffset + StagedAttention.StageLength(_p.KvHeads, _p.HeadSize, _segments[_count - 1].Capacity);
            _stageClaims += _p.KvHeads * s.Chunks;
            _count++;
        }

        /// <summary>Grows the staging buffers and score scratch to the batch's needs.</summary>
        public void End()
        {
            _byKvHead = _count * _p.KvHeads >= _threads && StagedAttention.DecodesByKvHead(_p.HeadSize);
            for (int i = 0; i < _count && _byKvHead; i++) _byKvHead = _segments[i].Tokens == 1;
            if (_byKvHead)
            {
                long scratch = 0;
                for (int i = 0; i < _count; i++)
                    scratch = Math.Max(scratch, StagedAttention.DecodeScratchLength(_p.Heads / _p.KvHeads, _p.HeadSize, _segments[i].Capacity));
                if (_decodeScratch.Length < scratch * _threads) _decodeScratch = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(scratch * _threads, 2L * _decodeScratch.Length)), pinned: true);
                return;
            }
            ref var last = ref _segments[_count - 1];
            long length = last.StageOffset + StagedAttention.StageLength(_p.KvHeads, _p.HeadSize, last.Capacity);
            if (length > _stageLength)
            {
                NativeMemory.AlignedFree(_keysT);
                NativeMemory.AlignedFree(_values);
                _keysT = _values = null;
                _stageLength = 0;
                _keysT = (float*)NativeMemory.AlignedAlloc((nuint)(length * sizeof(float)), 64);
                _values = (float*)NativeMemory.AlignedAlloc((nuint)(length * sizeof(float)), 64);
                _stageLength = length;
            }
            int needed = 0;
            for (int i = 0; i < _count; i++) needed = Math.Max(needed, StagedAttention.ScoresLength(_segments[i].Capacity));
            for (int i = 0; i < _scores.Length; i++)
                if (_scores[i].Length < needed) _scores[i] = new float[Math.Max(needed, 2 * _scores[i].Length)];
        }

        /// <summary>Runs both passes on <paramref name="pool"/>.</summary>
        public void Run(CpuWorkerPool pool)
        {
            if (_byKvHead)
            {
                _staging = false;
                _next = 0;
                pool.Run(this);
                return;
            }
            _staging = true;
            _next = 0;
            pool.Run(this);
            _staging = false;
            _next = 0;
            pool.Run(this);
        }

        public override void Execute(int worker, int workerCount)
        {
            int claim;
            if (_staging)
            {
                int kvRowStride = _p.KvHeads * _p.HeadSize, segment = 0;
                while ((claim = Interlocked.Increment(ref _next) - 1) < _stageClaims)
                {
                    while (segment + 1 < _count && _segments[segment + 1].FirstStageClaim <= claim) segment++; // claims only grow
                    ref var s = ref _segments[segment];
                    int local = claim - s.FirstStageClaim;
                    int kvHead = local / s.Chunks, start = local % s.Chunks * StageChunk, end = Math.Min(start + StageChunk, s.Visible);
                    float* keysT = _keysT + s.StageOffset, values = _values + s.StageOffset;
                    StagedAttention.StageKv(s.K, s.V, _type, kvHead, start, end, _p.HeadSize, kvRowStride, keysT, values, s.Capacity);
                    if (end == s.Visible) StagedAttention.ClearTail(kvHead, s.Visible, _p.HeadSize, keysT, s.Capacity);
                }
                return;
            }
            float scale = _p.Scale != 0 ? _p.Scale : 1f / MathF.Sqrt(_p.HeadSize);
            if (_byKvHead)
            {
                int group = _p.Heads / _p.KvHeads, kvRowStride = _p.KvHeads * _p.HeadSize;
                long share = _decodeScratch.Length / _threads;
                fixed (float* all = _decodeScratch)
                {
                    float* scratch = all + worker * share;
                    while ((claim = Interlocked.Increment(ref _next) - 1) < _count * _p.KvHeads)
                    {
                        ref var s = ref _segments[claim / _p.KvHeads];
                        StagedAttention.DecodeKvHead(s.Q, s.K, s.V, _type, kvRowStride, claim % _p.KvHeads, group, _p.HeadSize, s.Visible, s.Capacity,
                            s.Out, scratch, scale);
                    }
                }
                return;
            }
            fixed (float* scores = _scores[worker])
            {
                while ((claim = Interlocked.Increment(ref _next) - 1) < _count * _p.Heads)
                {
                    ref var s = ref _segments[claim / _p.Heads];
                    StagedAttention.ComputeHead(s.Q, _keysT + s.StageOffset, _values + s.StageOffset, s.Capacity, s.Out, 0, s.Tokens, s.FirstPosition,
                        _p.Heads, _p.KvHeads, _p.HeadSize, claim % _p.Heads, scores, scale);
                }
            }
        }

        public void Dispose()
        {
            NativeMemory.AlignedFree(_keysT);
            NativeMemory.AlignedFree(_values);
            _keysT = _values = null;
            _stageLength = 0;
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// Reusable per-caller state for <see cref="MatMul"/>: the buffer that holds the quantized activation rows
/// and the job object handed to the worker pool. It grows to the largest request and is then reused, so
/// steady-state matmuls allocate nothing. Not thread-safe: one matmul at a time per scratch.
/// </summary>
public sealed unsafe class MatMulScratch : IDisposable
{
    private byte* _buffer;
    private long _capacity;
    private byte* _terms;
    private long _termsCapacity;
    private byte*[] _workerBuffers = [];
    private long _workerBufferBytes;

    internal MatMul.Job Job { get; } = new();
    internal MatMul.QuantizeJob QuantizeJob { get; } = new();
    internal RepackedGemm.Job RepackedJob { get; } = new();

    /// <summary>Bytes currently reserved.</summary>
    public long Capacity => _capacity;

    /// <summary>A buffer of at least <paramref name="bytes"/> bytes, 64-byte aligned (quantized activations).</summary>
    internal byte* Ensure(long bytes) => Grow(ref _buffer, ref _capacity, bytes);

    /// <summary>A second buffer of at least <paramref name="bytes"/> bytes, 64-byte aligned (per-token activation terms, or the
    /// activation scales the multi-token kernels read).</summary>
    internal byte* EnsureTerms(long bytes) => Grow(ref _terms, ref _termsCapacity, bytes);

    private byte* Grow(ref byte* buffer, ref long capacity, long bytes)
    {
        ObjectDisposedException.ThrowIf(_capacity < 0, this);
        if (bytes > capacity)
        {
            NativeMemory.AlignedFree(buffer);
            buffer = null;
            capacity = 0;
            buffer = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            capacity = bytes;
        }
        return buffer;
    }

    /// <summary>One buffer of at least <paramref name="bytes"/> bytes per worker (repacked weight groups), 64-byte aligned.</summary>
    internal byte*[] EnsureWorkerBuffers(int workers, long bytes)
    {
        ObjectDisposedException.ThrowIf(_capacity < 0, this);
        if (_workerBuffers.Length < workers || _workerBufferBytes < bytes)
        {
            FreeWorkerBuffers();
            var buffers = new byte*[workers];
            for (int i = 0; i < workers; i++) buffers[i] = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            _workerBuffers = buffers;
            _workerBufferBytes = bytes;
        }
        return _workerBuffers;
    }

    private void FreeWorkerBuffers()
    {
        foreach (byte* b in _workerBuffers) NativeMemory.AlignedFree(b);
        _workerBuffers = [];
        _workerBufferBytes = 0;
    }

    /// <summary>Frees the buffers.</summary>
    public void Dispose()
    {
        if (_capacity < 0) return;
        NativeMemory.AlignedFree(_buffer);
        NativeMemory.AlignedFree(_terms);
        FreeWorkerBuffers();
        _buffer = null;
        _terms = null;
        _capacity = -1;
    }
}

/// <summary>
/// y[n, rows] = x[n, cols] · W[rows, cols]ᵀ with W stored row-major in its GGUF type (rows of <c>cols</c>
/// elements, as in a GGUF file, read in place). Activations are quantized once per row (Q8_0 / Q8_K as
/// <see cref="QuantDot.ActivationType"/> says); then one of three paths runs, with work claimed dynamically by the pool's threads:
/// <list type="bullet">
/// <item>n = 1 (generation): tiles of rows; four rows at a time through <see cref="QuantDot"/>'s multi-row kernels (the quantized
/// types at the AVX2 and AVX-512 levels), the rest one row at a time.</item>
/// <item>n ≥ <see cref="RepackedGemm.MinTokensFor"/> (3 for Q4_0, 8 for Q8_0, Q4_K, Q6_K: prompts, several sequences): <see cref="RepackedGemm"/> — groups of 8
/// rows repacked per thread with SIMD lanes over rows, every token run against each group.</item>
/// <item>Q4_0 weights kept repacked (<see cref="RepackedWeights"/>, what the CPU queue uses; the overload that takes them): the repacked
/// kernels for every n, one token included, with no repack per call (docs/batching.md#cpu-weights-repacked-once).</item>
/// <item>otherwise: tiles of rows × tokens; within a tile each weight row meets the tile's tokens in groups of 8 and 4 through
/// the multi-token kernels, which decode each weight block once per group (register blocking); tokens left over go through
/// the multi-row kernels.</item>
/// </list>
/// Every path computes y[t, r] with the same float operations (the canonical arithmetic of docs/batching.md#batch-invariance-on-the-cpu),
/// so a token's output row is bit for bit the same whatever n, its position in the batch, the thread count and the tiling.
/// </summary>
public static unsafe class MatMul
{
    /// <summary>
    /// Rows per tile for generation (n = 1): a quarter of each thread's share, at least 16. Generation streams the whole matrix
    /// from memory once, and each tile is one sequential stream that the kernels prefetch ahead within; a thread's first rows
    /// in a new tile start cold, so tiles are large (few cold starts) but still several per thread (balance when a thread is
    /// held up). With 16-row tiles, every fourth row group of a thread began with a cache miss.
    /// </summary>
    private static int VectorRowTile(long rows, int threads) => (int)Math.Max(16, rows / (4L * threads) & ~3L);
    /// <summary>Tile shape for prompts (n &gt; 1): 16 weight rows stay in L1/L2 while 8 token rows stream past.
    /// The token tile is a multiple of every multi-token kernel's width (4 and 8), so only the last tile has leftovers
    /// (which take the single-token kernel).</summary>
    private const int BatchRowTile = 16, BatchTokenTile = 8;

    /// <summary>
    /// Computes <c>y[t * rows + r] = Σ_c x[t * cols + c] · W[r, c]</c> for t &lt; <paramref name="n"/>, r &lt; <paramref name="rows"/>.
    /// <paramref name="w"/> holds <paramref name="rows"/> rows of <c>RowSize(wType, cols)</c> bytes; <paramref name="cols"/> must be a
    /// whole number of the type's blocks. Nothing past the last row is read.
    /// </summary>
    public static void Run(GgmlType wType, byte* w, long rows, long cols, float* x, long n, float* y, CpuWorkerPool pool, MatMulScratch scratch)
        => Run(wType, w, rows, cols, x, n, y, pool, scratch, KernelIsaSupport.Best);

    /// <summary>
    /// <see cref="Run(GgmlType, byte*, long, long, float*, long, float*, CpuWorkerPool, MatMulScratch)"/> reading the weights from
    /// <paramref name="packed"/>, the same matrix kept repacked (made from <paramref name="w"/>), for every token count: the same
    /// bits as the plain call, without a repack per call (docs/batching.md#cpu-weights-repacked-once). <paramref name="w"/> is read
    /// only for the rows after the last whole group of 8.
    /// </summary>
    public static void Run(RepackedWeights packed, byte* w, float* x, long n, float* y, CpuWorkerPool pool, MatMulScratch scratch)
    {
        ArgumentNullException.ThrowIfNull(packed);
        Run(packed.Type, w, packed.Rows, packed.Cols, x, n, y, pool, scratch, KernelIsaSupport.Best, packed);
    }

    internal static void Run(GgmlType wType, byte* w, long rows, long cols, float* x, long n, float* y, CpuWorkerPool pool, MatMulScratch scratch, KernelIsa isa,
                             RepackedWeights? packed = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        ArgumentNullException.ThrowIfNull(scratch);
        if (!QuantDot.IsSupported(wType)) throw new NotSupportedException($"matmul: no CPU kernel for weight type {wType}");
        if (rows < 0 || n < 0) throw new ArgumentOutOfRangeException(rows < 0 ? nameof(rows) : nameof(n), "matmul: rows and n must be non-negative");
        if (cols <= 0) throw new ArgumentOutOfRangeException(nameof(cols), cols, "matmul: cols must be positive");
        if (packed != null && (packed.Type != wType || packed.Rows != rows || packed.Cols != cols || !RepackedWeights.Supports(wType, rows, cols, isa)))
            throw new ArgumentException($"matmul: repacked weights of {packed.Type} {packed.Rows}×{packed.Cols} do not serve {wType} {rows}×{cols} at {isa}", nameof(packed));
        var actType = QuantDot.ActivationType(wType);
        int block = Math.Max(GgmlTypes.Get(wType).BlockSize, GgmlTypes.Get(actType).BlockSize);
        // Weights kept repacked take the repacked kernels at every token count (one sequential stream per 8 rows, no repack).
        bool repacked = packed != null || n >= RepackedGemm.MinTokensFor(wType) && RepackedGemm.Supports(wType, isa);
        var multi8 = n == 1 || repacked ? null : QuantDot.ResolveMultiToken(wType, isa, 8);
        var multi4 = n == 1 || repacked ? null : QuantDot.ResolveMultiToken(wType, isa, 4);
        if (cols % block != 0)
            throw new ArgumentException($"matmul: a {wType} row of {cols} elements is not a whole number of {block}-element blocks", nameof(cols));
        if (rows == 0 || n == 0) return;
        if (w == null || x == null || y == null) throw new ArgumentNullException(w == null ? nameof(w) : x == null ? nameof(x) : nameof(y));

        long blocks = repacked ? cols / RepackedGemm.BlockElementsFor(wType) : 0;
        byte* act;
        long actRowBytes;
        float* scales = null;
        byte* blockTerms = null;
        float* tokenScales = null;
        if (actType == GgmlType.F32)
        {
            act = (byte*)x;
            actRowBytes = cols * sizeof(float);
        }
        else
        {
            actRowBytes = GgmlTypes.RowSize(actType, cols);
            act = scratch.Ensure(checked(actRowBytes * n));
            if (repacked)
            {
                // Per-token block terms for the repacked kernels (scale as a float, plus offset or sub-block sums), filled
                // together with the quantization of each row.
                byte* terms = scratch.EnsureTerms(checked(n * blocks * (sizeof(float) + RepackedGemm.KernelsFor(wType).TermBytes)));
                scales = (float*)terms;
                blockTerms = terms + n * blocks * sizeof(float);
            }
            else if ((multi8 != null || multi4 != null) && QuantDot.MultiTokenScales(wType))
            {
                // The tokens' activation scales as floats, block-major (block b of token t at b·n + t), as the multi-token kernels read them.
                tokenScales = (float*)scratch.EnsureTerms(checked(n * (cols / 32) * sizeof(float)));
            }
            var quantize = scratch.QuantizeJob;
            quantize.Set(actType, x, act, cols, actRowBytes, n, isa, repacked, wType, scales, blockTerms, tokenScales);
            if (n == 1 || pool.ThreadCount == 1)
                for (long t = 0; t < n; t++) quantize.Row(t);
            else
                pool.Run(quantize);
        }

        if (packed != null)
        {
            scratch.RepackedJob.SetPacked(packed, w, GgmlTypes.RowSize(wType, cols), act, actRowBytes, scales, blockTerms, n, y, QuantDot.Resolve(wType, isa), pool.ThreadCount);
            pool.Run(scratch.RepackedJob);
            return;
        }
        if (repacked)
        {
            var buffers = scratch.EnsureWorkerBuffers(pool.ThreadCount, blocks * RepackedGemm.GroupBlockBytesFor(wType));
            scratch.RepackedJob.Set(wType, w, GgmlTypes.RowSize(wType, cols), rows, cols, act, actRowBytes, scales, blockTerms, n, y, buffers, QuantDot.Resolve(wType, isa));
            pool.Run(scratch.RepackedJob);
            return;
        }

        var job = scratch.Job;
        job.Set(QuantDot.Resolve(wType, isa), multi8, multi4, tokenScales, QuantDot.ResolveMultiRow(wType, isa), w, GgmlTypes.RowSize(wType, cols),
                rows, cols, act, actRowBytes, n, y, n == 1 ? VectorRowTile(rows, pool.ThreadCount) : BatchRowTile, n == 1 ? 1 : BatchTokenTile);
        pool.Run(job);
    }

    /// <summary>Quantizes activation rows in parallel, one row per claim.</summary>
    internal sealed class QuantizeJob : CpuParallelJob
    {
        private GgmlType _type, _weightType;
        private float* _x, _scales, _tokenScales;
        private byte* _dst, _terms;
        private long _cols, _rowBytes, _n, _next, _blocks;
        private int _termBytes;
        private bool _prepare;
        private KernelIsa _isa;

        /// <summary>Quantizes <paramref name="n"/> rows; with <paramref name="repacked"/> each row's <see cref="RepackedGemm"/> terms are
        /// prepared right after it (<paramref name="scales"/>: n × blocks floats; <paramref name="terms"/>: n × blocks × TermBytes);
        /// with <paramref name="tokenScales"/> (Q8_0 rows only) each row's block scales are written there as floats, block b of
        /// row t at b·n + t.</summary>
        public void Set(GgmlType type, float* x, byte* dst, long cols, long rowBytes, long n, KernelIsa isa,
                        bool repacked = false, GgmlType weightType = default, float* scales = null, byte* terms = null, float* tokenScales = null)
        {
            _type = type; _x = x; _dst = dst; _cols = cols; _rowBytes = rowBytes; _n = n; _isa = isa;
            _prepare = repacked; _weightType = weightType; _scales = scales; _terms = terms; _tokenScales = tokenScales;
            _blocks = repacked ? cols / RepackedGemm.BlockElementsFor(weightType) : 0;
            _termBytes = repacked ? RepackedGemm.KernelsFor(weightType).TermBytes : 0;
            _next = 0;
        }

        /// <summary>Row <paramref name="t"/>: quantized, then its repacked-kernel terms when asked for.</summary>
        public void Row(long t)
        {
            byte* row = _dst + t * _rowBytes;
            ActivationQuantizer.Quantize(_type, _x + t * _cols, row, _cols, _isa);
            if (_prepare) RepackedGemm.PrepareActivation(_weightType, row, _blocks, _scales + t * _blocks, _terms + t * _blocks * _termBytes);
            if (_tokenScales != null)
                for (long b = 0; b < _cols / 32; b++) _tokenScales[b * _n + t] = HalfConversion.Load(row + b * 34);
        }

        public override void Execute(int worker, int workerCount)
        {
            long t;
            while ((t = Interlocked.Increment(ref _next) - 1) < _n) Row(t);
        }
    }

    /// <summary>The tiled dot-product sweep; tiles are claimed through an atomic counter. Within a tile, whole groups of 8 and
    /// then 4 tokens go through the multi-token kernels (each weight block decoded once per group, row by row), and each remaining
    /// token through the multi-row kernel over the tile's rows (the single-row kernel for rows left over).</summary>
    internal sealed class Job : CpuParallelJob
    {
        private delegate*<byte*, void*, long, float> _dot;
        private delegate*<byte*, byte*, long, float*, long, long, float*, long, void> _multi8, _multi4;
        private delegate*<byte*, long, byte*, long, float*, void> _multiRow;
        private byte* _w, _act;
        private float* _y, _tokenScales;
        private long _rowBytes, _rows, _cols, _actRowBytes, _n, _rowTiles, _tokenTiles, _next;
        private int _rowTile, _tokenTile;

        /// <param name="multi8">Multi-token kernel for 8 tokens, or null.</param>
        /// <param name="multi4">Multi-token kernel for 4 tokens, or null.</param>
        /// <param name="tokenScales">The activation scales the multi-token kernels read (block-major, n per block), or null.</param>
        /// <param name="multiRow">A kernel for <see cref="QuantDot.MultiRowWidth"/> rows at once, or null (then every row·token takes <paramref name="dot"/>).</param>
        public void Set(delegate*<byte*, void*, long, float> dot, delegate*<byte*, byte*, long, float*, long, long, float*, long, void> multi8,
                        delegate*<byte*, byte*, long, float*, long, long, float*, long, void> multi4, float* tokenScales,
                        delegate*<byte*, long, byte*, long, float*, void> multiRow, byte* w, long rowBytes, long rows, long cols, byte* act, long actRowBytes, long n, float* y, int rowTile, int tokenTile)
        {
            _dot = dot; _multi8 = multi8; _multi4 = multi4; _tokenScales = tokenScales; _multiRow = multiRow;
            _w = w; _rowBytes = rowBytes; _rows = rows; _cols = cols;
            _act = act; _actRowBytes = actRowBytes; _n = n; _y = y;
            _rowTile = rowTile; _tokenTile = tokenTile;
            _rowTiles = (rows + rowTile - 1) / rowTile;
            _tokenTiles = (n + tokenTile - 1) / tokenTile;
            _next = 0;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int worker, int workerCount)
        {
            long tiles = _rowTiles * _tokenTiles, tile;
            while ((tile = Interlocked.Increment(ref _next) - 1) < tiles)
            {
                long r0 = tile / _tokenTiles * _rowTile, r1 = Math.Min(r0 + _rowTile, _rows);
                long t0 = tile % _tokenTiles * _tokenTile, t1 = Math.Min(t0 + _tokenTile, _n);
                long grouped8 = _multi8 == null ? t0 : t0 + (t1 - t0) / 8 * 8;
                long grouped = _multi4 == null ? grouped8 : grouped8 + (t1 - grouped8) / 4 * 4;
                if (grouped > t0)
                {
                    for (long r = r0; r < r1; r++)
                    {
                        byte* wRow = _w + r * _rowBytes;
                        long t = t0;
                        for (; t < grouped8; t += 8)
                            _multi8(wRow, _act + t * _actRowBytes, _actRowBytes, _tokenScales + t, _n, _cols, _y + t * _rows + r, _rows);
                        for (; t < grouped; t += 4)
                            _multi4(wRow, _act + t * _actRowBytes, _actRowBytes, _tokenScales + t, _n, _cols, _y + t * _rows + r, _rows);
                    }
                }
                for (long t = grouped; t < t1; t++)
                {
                    byte* act = _act + t * _actRowBytes;
                    float* y = _y + t * _rows;
                    long r = r0;
                    if (_multiRow != null)
                        for (; r + QuantDot.MultiRowWidth <= r1; r += QuantDot.MultiRowWidth)
                            _multiRow(_w + r * _rowBytes, _rowBytes, act, _cols, y + r);
                    for (; r < r1; r++)
                        y[r] = _dot(_w + r * _rowBytes, act, _cols);
                }
            }
        }
    }
}

using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Gpu.Kernels;

/// <summary>A kernel launch's shape: a GridX × GridY × GridZ grid of BlockX-thread blocks (GridZ: the mmq kernels' K slices).</summary>
internal readonly record struct Launch(uint GridX, uint GridY, uint BlockX, uint GridZ = 1);

/// <summary>
/// Launch shapes of the kernels and the constants they share with kernels.cu (emitted as #defines by
/// <see cref="KernelSource"/>). Pure arithmetic, testable without a GPU.
/// </summary>
internal static class LaunchGeometry
{
    /// <summary>Elements one warp reads per step of a matmul row: 32 lanes × 16 consecutive elements.
    /// Quantized rows are read in whole chunks of this many elements, which is why tensors need slides.</summary>
    public const int RowChunkElements = 512;

    /// <summary>Warps (weight rows) per matmul block.</summary>
    public const int MatMulWarpsPerBlock = 4;

    /// <summary>Tokens one block of the batched matmul kernel applies each dequantized weight chunk to.</summary>
    public const int MatMulTokensPerBlock = 8;

    /// <summary>Largest head the attention kernel holds in registers (8 elements per lane).</summary>
    public const int AttentionMaxHeadSize = 256;

    /// <summary>Largest head the one-token attention kernels with 4 elements a lane take (attention_{decode,split,rows}_*_h128:
    /// fewer registers, more blocks resident on an SM; docs/gpu-kernels.md#decode-attention-registers).</summary>
    public const int AttentionNarrowHeadSize = 128;

    /// <summary>The one-token attention kernel of <paramref name="kind"/> (<c>decode</c>, <c>split</c>, <c>rows</c>) over a cache of type
    /// <paramref name="cache"/> (kernel suffix: <c>f32</c>, <c>f16</c>, <c>q8_0</c>) for heads of up to <paramref name="headSize"/>.</summary>
    public static string AttentionStepKernelName(string kind, string cache, int headSize)
        => headSize <= AttentionNarrowHeadSize ? $"attention_{kind}_{cache}_h128" : $"attention_{kind}_{cache}";

    /// <summary>Warps per attention block: each walks every 16th cached position of one (head, token), so a decode
    /// step at long context still spreads over heads × 16 warps.</summary>
    public const int AttentionWarps = 16;

    /// <summary>Every block size below is a multiple of this: a whole number of wave64 wavefronts (gfx9/CDNA), and so of
    /// 32-wide warps, so no hardware warp is partly filled (see gpu_portability.h).</summary>
    public const int BlockMultiple = 64;

    /// <summary>Threads per block of the row-wise and element-wise kernels.</summary>
    public const int BlockThreads = 256;

    /// <summary>Elements one get-rows thread writes.</summary>
    public const int GetRowsElementsPerThread = 16;

    /// <summary>Cap on grid-stride kernels' blocks (they loop over the rest).</summary>
    public const int MaxGridStrideBlocks = 65535;

    /// <summary>Fewest tokens for which a matmul goes to the vendor BLAS (cuBLAS; weights dequantized to F16 first): below this
    /// the dequantization pass costs more than the tensor cores save.</summary>
    public const int BlasMinTokens = 32;

    /// <summary>Whether a matmul of <paramref name="tokens"/> tokens goes to the vendor BLAS when it is available.</summary>
    public static bool UsesBlas(int tokens) => tokens >= BlasMinTokens;

    /// <summary>quantize_x_q8: one warp per 32-element block, <see cref="BlockThreads"/> threads per block.</summary>
    public static Launch QuantizeX(long blocks)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocks);
        return new Launch(checked((uint)CeilDiv(blocks, BlockThreads / 32)), 1, BlockThreads);
    }

    /// <summary>matvec_q8_* and swiglu_q8_*: a warp per weight row as <see cref="MatMul"/>, grid y = token.</summary>
    public static Launch MatVecQ8(long rows, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        return new Launch(checked((uint)CeilDiv(rows, MatMulWarpsPerBlock)), (uint)tokens, MatMulWarpsPerBlock * 32);
    }

    /// <summary>Tokens one block of matmul_q8_* multiplies per pass over its weight rows (kernels.cu MATMUL_Q8_TOKENS).</summary>
    public const int MatMulQ8Tokens = 8;

    /// <summary>matmul_q8_*: a warp per weight row as <see cref="MatVecQ8"/>, grid y = groups of <see cref="MatMulQ8Tokens"/> tokens.</summary>
    public static Launch MatMulQ8(long rows, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        return new Launch(checked((uint)CeilDiv(rows, MatMulWarpsPerBlock)), checked((uint)CeilDiv(tokens, MatMulQ8Tokens)), MatMulWarpsPerBlock * 32);
    }

    /// <summary>Warps per block of mmq_*: each takes a contiguous slice of the weight rows' blocks (kernels.cu MMQ_KSPLIT).</summary>
    public const int MmqWarps = 8;

    /// <summary>Weight rows per block of mmq_*: four 8-row tiles of the int8 mma (kernels.cu MMQ_ROWS).</summary>
    public const int MmqRows = 32;

    /// <summary>The mmq_* kernels' token tiles: a block multiplies 16 × m tokens (m = 1, 2, 4) per pass over its rows.</summary>
    public static IReadOnlyList<int> MmqTokenTiles { get; } = [1, 2, 4];

    /// <summary>The kernel for <paramref name="suffix"/> weights and 16 × <paramref name="tiles"/> tokens per pass.</summary>
    public static string MmqKernelName(string suffix, int tiles) => $"mmq_{suffix}_x{tiles}";

    /// <summary>Index in <see cref="MmqTokenTiles"/> of the kernel an mmq launch for <paramref name="tokens"/> tokens uses: the fewest tiles that cover them, at most 4.</summary>
    public static int MmqTileIndex(int tokens) => tokens <= 16 ? 0 : tokens <= 32 ? 1 : 2;

    /// <summary>The token tiles (1, 2 or 4 × 16 tokens per pass) of an mmq launch for <paramref name="tokens"/> tokens.</summary>
    public static int MmqTiles(int tokens) => MmqTokenTiles[MmqTileIndex(tokens)];

    /// <summary>mmq_*: <see cref="MmqWarps"/> warps per block of <paramref name="blockRows"/> rows (the kernels' MMQ_ROWS,
    /// <see cref="MmqRows"/> unless a tuning define moved it), grid y = groups of 16 × tiles tokens, z = <paramref name="splits"/>
    /// K slices (<see cref="MmqSplits"/>).</summary>
    public static Launch Mmq(long rows, int tokens, int blockRows = MmqRows, int splits = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(splits);
        return new Launch(checked((uint)CeilDiv(rows, blockRows)), checked((uint)CeilDiv(tokens, 16 * MmqTiles(tokens))), MmqWarps * 32, (uint)splits);
    }

    /// <summary>Elements of a row one warp step of mmq_* covers (kernels.cu MmaStep): 64 for Q4_K (a pair of sub-blocks), else 32.</summary>
    public static int MmqStepElements(GgmlType type) => type == GgmlType.Q4_K ? 64 : 32;

    /// <summary>Blocks of mmq_* per SM assumed where the binding cannot ask the driver (at 98-128 registers a thread, 2 fit).</summary>
    public const int MmqAssumedBlocksPerSm = 2;

    /// <summary>Fewest steps a warp of a split mmq launch takes of its row: shorter slices spend more on the combine than they gain.</summary>
    public const int MmqMinStepsPerWarp = 4;

    /// <summary>Most K slices of one mmq launch.</summary>
    public const int MmqMaxSplits = 8;

    /// <summary>
    /// K slices (grid z) of an mmq launch over <paramref name="rows"/> rows of <paramref name="steps"/> steps: as many as fill the
    /// <paramref name="residentBlocks"/> the GPU holds at once (SMs × blocks per SM) with whole waves, each warp keeping at least
    /// <see cref="MmqMinStepsPerWarp"/> steps; 1 when the row tiles alone fill it. A 4096-row matrix in 32-row blocks is 128
    /// blocks: an H200's 132 SMs hold 264, so its matmul runs split in two (docs/gpu-kernels.md#int8-tensor-core-matmuls-mmq). Depends on the matrix
    /// and the GPU only, never the token count (batch invariance).
    /// </summary>
    public static int MmqSplits(long rows, long steps, int blockRows, int residentBlocks)
    {
        long tiles = CeilDiv(rows, blockRows);
        long byOccupancy = residentBlocks / tiles, byLength = steps / ((long)MmqWarps * MmqMinStepsPerWarp);
        return (int)Math.Clamp(Math.Min(byOccupancy, byLength), 1, MmqMaxSplits);
    }

    /// <summary>Elements of a block group of the tiled Q4_0 layout (kernels.cu TQ_GROUP): four 32-element blocks.</summary>
    public const int TiledQ4_0GroupElements = 128;

    /// <summary>Device memory a tiled copy must leave free (KV caches and scratch grow later): 1 GiB.</summary>
    public const long TiledCopyReserveBytes = 1L << 30;

    /// <summary>
    /// Whether a <paramref name="rows"/> × <paramref name="cols"/> matrix of <paramref name="type"/> has a tiled layout
    /// (docs/gpu-kernels.md#tiled-q4_0-weights): Q4_0, rows a multiple of 8, row length a multiple of 128.
    /// </summary>
    public static bool HasTiledLayout(GgmlType type, long rows, long cols)
        => type == GgmlType.Q4_0 && rows > 0 && rows % 8 == 0 && cols > 0 && cols % TiledQ4_0GroupElements == 0;

    /// <summary>tile_q4_0: one thread per (8-row group, block group, lane), <see cref="BlockThreads"/> threads per block.</summary>
    public static Launch TileQ4_0(long rows, long cols)
    {
        long threads = rows / 8 * (cols / TiledQ4_0GroupElements) * 32;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        return new Launch(checked((uint)CeilDiv(threads, BlockThreads)), 1, BlockThreads);
    }

    /// <summary>Threads per block of rms_norm_q8_row: each block writes and quantizes this many elements of the row.</summary>
    public const int NormRowSliceThreads = 256;

    /// <summary>rms_norm_q8_row: one block per <see cref="NormRowSliceThreads"/> elements of a row, grid y = <paramref name="rows"/>.</summary>
    public static Launch RmsNormRow(long n, int rows = 1)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        return new Launch(checked((uint)CeilDiv(n, NormRowSliceThreads)), (uint)rows, NormRowSliceThreads);
    }

    /// <summary>
    /// Work items of rope_store_kv (and rope_store_kv_rows): q's rotated pairs, then per (token, kv head) k's rotated pairs and
    /// unrotated tail, then v's elements. Without <paramref name="stores"/> (a Q8_0 cache, which store_kv_q8_0 writes next) only the
    /// rotated pairs of q and k.
    /// </summary>
    public static long RopeStoreKvItems(int tokens, int heads, int kvHeads, int headSize, int dims, bool stores = true)
    {
        int half = dims / 2;
        if (!stores) return (long)tokens * (heads + kvHeads) * half;
        return (long)tokens * heads * half + (long)tokens * kvHeads * (half + headSize - dims) + (long)tokens * kvHeads * headSize;
    }

    /// <summary>Threads of a dequantize_f16_* block (each dequantizes 16 elements of a row).</summary>
    public const int DequantizeThreads = 128;

    /// <summary>dequantize_f16_*: grid x covers a row's 16-element groups, grid y the rows (in strides past 65,535).</summary>
    public static Launch Dequantize(long rows, long cols)
        => new((uint)CeilDiv(CeilDiv(cols, 16), DequantizeThreads), (uint)Math.Min(rows, MaxGridStrideBlocks), DequantizeThreads);

    /// <summary>Whether the batched kernel (<c>_tn</c>) is used for <paramref name="tokens"/> tokens.</summary>
    public static bool UsesBatchedMatMul(int tokens) => tokens > 1;

    /// <summary>matmul: one warp per weight row, <see cref="MatMulWarpsPerBlock"/> rows per block; y spans token groups.</summary>
    public static Launch MatMul(long rows, int tokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(tokens);
        int perBlock = UsesBatchedMatMul(tokens) ? MatMulTokensPerBlock : 1;
        return new Launch(checked((uint)CeilDiv(rows, MatMulWarpsPerBlock)), checked((uint)CeilDiv(tokens, perBlock)), MatMulWarpsPerBlock * 32);
    }

    /// <summary>get_rows: x = requested row, y = slices of <see cref="BlockThreads"/>×16 elements of the row.</summary>
    public static Launch GetRows(int ids, long rowLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ids);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rowLength);
        return new Launch((uint)ids, checked((uint)CeilDiv(rowLength, (long)BlockThreads * GetRowsElementsPerThread)), BlockThreads);
    }

    /// <summary>Grid-stride element-wise kernels: enough blocks for one element per thread, capped.</summary>
    public static Launch Elementwise(long n)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        return new Launch((uint)Math.Min(CeilDiv(n, BlockThreads), MaxGridStrideBlocks), 1, BlockThreads);
    }

    /// <summary>Threads of an rms_norm block (one block per row; rows of up to 8 × this many elements stay in registers).</summary>
    public const int NormThreads = 1024;

    /// <summary>Longest activation row that rms_norm_q8_row, attention and silu_mul also quantize for the int8 mat-vec (a decode row;
    /// a prompt batch would be quantized for nothing, since prompts do not use the int8 mat-vec).</summary>
    public const int MaxFusedQuantizeElements = 65536;

    /// <summary>rms_norm: one block of <see cref="NormThreads"/> per row.</summary>
    public static Launch RmsNorm(int rows) => new(checked((uint)rows), 1, NormThreads);

    /// <summary>attention: one block of <see cref="AttentionWarps"/> warps per (head, token).</summary>
    public static Launch Attention(int heads, int tokens) => new((uint)heads, (uint)tokens, AttentionWarps * 32);

    /// <summary>Tokens per block of attention_mma_*_d*: 16 per warp (kernels.cu FA_WARPS).</summary>
    public const int AttentionMmaTokensPerBlock = 64;

    /// <summary>Fewest tokens an attention call needs to take the tensor-core prompt kernel (fewer: the per-token kernel).</summary>
    public const int AttentionMmaMinTokens = 16;

    /// <summary>The tensor-core prompt attention for head size <paramref name="headSize"/> (64 or 128) over a cache of type
    /// <paramref name="cache"/> (the kernel suffix: <c>f16</c>, <c>q8_0</c>).</summary>
    public static string AttentionMmaKernelName(int headSize, string cache = "f16") => $"attention_mma_{cache}_d{headSize}";

    /// <summary>attention_mma_*_d*: one block of 4 warps per (head, <see cref="AttentionMmaTokensPerBlock"/> tokens).</summary>
    public static Launch AttentionMma(int heads, int tokens)
        => new((uint)heads, checked((uint)CeilDiv(tokens, AttentionMmaTokensPerBlock)), AttentionMmaTokensPerBlock / 16 * 32);

    /// <summary>Blocks per head of a split decode attention over <paramref name="positions"/> positions, <paramref name="chunk"/> per block.</summary>
    public static int AttentionSplits(int positions, int chunk) => (int)CeilDiv(positions, chunk);

    /// <summary>
    /// Positions per block of a decode attention over <paramref name="positions"/> positions of <paramref name="heads"/> heads:
    /// at least <paramref name="minChunk"/> (the <c>attention_chunk</c> option; 0: never split), and more where that would
    /// give the GPU more blocks than it holds at once (<paramref name="residentBlocks"/>: SMs × the split kernel's blocks per
    /// SM). A head gets at most ⌊residentBlocks / heads⌋ blocks (at least 1), each a multiple of 64 positions, so the
    /// launch is one wave. Measured on an H100, 7B at depth 3,968 with one block an SM: 128 blocks of 1,024 positions beat
    /// 256 of 512 (289 against 280 t/s), and more, shorter blocks lost further (docs/gpu-kernels.md#attention).
    /// </summary>
    public static int AttentionChunk(int positions, int heads, int residentBlocks, int minChunk)
    {
        if (minChunk <= 0) return 0;
        long perHead = Math.Max(1, residentBlocks / Math.Max(1, heads));
        long fill = CeilDiv(CeilDiv(Math.Max(1, positions), perHead), 64) * 64;
        return (int)Math.Max(minChunk, fill);
    }

    /// <summary>attention_split_*: one block of <see cref="AttentionWarps"/> warps per (head, chunk of positions).</summary>
    public static Launch AttentionSplit(int heads, int splits) => new((uint)heads, (uint)splits, AttentionWarps * 32);

    /// <summary>Bytes the kernels may touch for <paramref name="tensor"/>: its size plus the slide of a 512-element chunked reader.</summary>
    public static long AllocSize(TensorInfo tensor) => tensor.ByteSize + TensorPadding.SlideBytes(tensor, RowChunkElements);

    /// <summary>⌈a / b⌉ for positive numbers.</summary>
    public static long CeilDiv(long a, long b) => (a + b - 1) / b;
}

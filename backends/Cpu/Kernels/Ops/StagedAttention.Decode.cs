using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// One-token steps (decode) without the staging buffers (docs/batching.md#cpu-decode-attention): a worker takes one KV head and
/// every query head of its group, and walks the visible positions in tiles of <see cref="PositionBlock"/>. Each tile of keys is
/// converted to float once, transposed into a few KiB that stay in L1, and serves the scores of all the group's query heads; then
/// each tile of values likewise serves all their weighted sums. The staged path instead wrote every visible position of the head
/// to a buffer of 2 × head size × positions floats and read it back once per query head: at depth 2,048 that is 1 MiB a KV head,
/// read 8 times for a 32/4-head model, from L3 or memory once the layer's matmuls have evicted it.
/// <para>The arithmetic is the staged path's, chain for chain: a score is the FMA chain over the head's dimensions in order from
/// zero, times the scale; the softmax is <see cref="RowOps.Softmax"/> over the same row; an output element is the FMA chain over
/// the positions in order from zero (kept in the output row between tiles, which stores the float exactly). So a token decoded
/// here gets the same bits as in a prompt batch, which takes the staged path, and batch invariance holds.</para>
/// </summary>
public static unsafe partial class StagedAttention
{
    /// <summary>Whether <see cref="DecodeKvHead"/> handles this head size here: a multiple of 8 on an AVX machine (its 8 × 8 transposes).</summary>
    public static bool DecodesByKvHead(int headDim) => headDim % 8 == 0 && Avx.IsSupported;

    /// <summary>Floats of scratch one worker needs for <see cref="DecodeKvHead"/>: a score row of <paramref name="capacity"/> per
    /// query head of the group, one tile of <see cref="PositionBlock"/> rows and an 8-row block for the transposes.</summary>
    public static long DecodeScratchLength(int groupSize, int headDim, int capacity) => (long)groupSize * capacity + (PositionBlock + 8L) * headDim;

    /// <summary>
    /// out[h] = softmax_j&lt;visible(q[h]·k_j · scale) · v for the <paramref name="groupSize"/> query heads h of KV head
    /// <paramref name="kvHead"/> (heads kvHead × groupSize onwards) of one token. <paramref name="q"/> and <paramref name="output"/>
    /// are the token's rows of all heads; <paramref name="capacity"/> is <see cref="Capacity"/>(1, visible − 1) and
    /// <paramref name="scratch"/> holds <see cref="DecodeScratchLength"/> floats private to the caller.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void DecodeKvHead(float* q, void* kCache, void* vCache, KvCacheType kvType, int kvRowStride, int kvHead, int groupSize,
                                    int headDim, int visible, int capacity, float* output, float* scratch, float scale)
    {
        if (Attention.IsQuantized(kvType)) Attention.ValidateBlocks(kvType, headDim, kvRowStride);
        float* scores = scratch;                                  // [groupSize][capacity]
        float* tile = scratch + (long)groupSize * capacity;       // keys: [headDim][PositionBlock]; values: [PositionBlock][headDim]
        float* block = tile + (long)PositionBlock * headDim;      // [8][headDim]: eight key rows before their transpose
        long headOffset = (long)kvHead * headDim;
        float* q0 = q + headOffset * groupSize, out0 = output + headOffset * groupSize;

        // Scores: each tile of keys transposed as the staging buffer holds them (positions past the last visible one are zeros).
        for (int j0 = 0; j0 < visible; j0 += PositionBlock)
        {
            for (int r0 = 0; r0 < PositionBlock; r0 += 8)
                TransposeKeyRows8(kCache, kvType, (long)(j0 + r0) * kvRowStride + headOffset, kvRowStride, visible - j0 - r0, headDim, block,
                                  tile + r0, PositionBlock);
            int h = 0;
            for (; h + 2 <= groupSize; h += 2)
                TileScores2(q0 + (long)h * headDim, q0 + (long)(h + 1) * headDim, tile, headDim, scores + (long)h * capacity + j0, scores + (long)(h + 1) * capacity + j0, scale);
            if (h < groupSize) Scores(q0 + (long)h * headDim, tile, PositionBlock, headDim, PositionBlock, scores + (long)h * capacity + j0, scale);
        }
        for (int h = 0; h < groupSize; h++)
        {
            RowOps.Softmax(scores + (long)h * capacity, visible);
            new Span<float>(out0 + (long)h * headDim, headDim).Clear();
        }
        // Weighted values: each tile of value rows converted once, added into every head's output row.
        for (int j0 = 0; j0 < visible; j0 += PositionBlock)
        {
            int n = Math.Min(PositionBlock, visible - j0);
            for (int r = 0; r < n; r++) LoadRow(vCache, kvType, (long)(j0 + r) * kvRowStride + headOffset, tile + (long)r * headDim, headDim);
            for (int h = 0; h < groupSize; h++) AddWeightedRows(scores + (long)h * capacity + j0, tile, n, headDim, out0 + (long)h * headDim);
        }
    }

    /// <summary>The scores of two query heads for the 32 positions of a transposed key tile: eight independent FMA chains, each lane's
    /// chain that of <see cref="Scores"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TileScores2(float* qa, float* qb, float* tile, int headDim, float* scoresA, float* scoresB, float scale)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        float* k = tile;
        for (int i = 0; i < headDim; i++, k += PositionBlock)
        {
            Vector256<float> k0 = Vector256.Load(k), k1 = Vector256.Load(k + 8), k2 = Vector256.Load(k + 16), k3 = Vector256.Load(k + 24);
            var x = Vector256.Create(qa[i]);
            a0 = Vector256.FusedMultiplyAdd(x, k0, a0);
            a1 = Vector256.FusedMultiplyAdd(x, k1, a1);
            a2 = Vector256.FusedMultiplyAdd(x, k2, a2);
            a3 = Vector256.FusedMultiplyAdd(x, k3, a3);
            var y = Vector256.Create(qb[i]);
            b0 = Vector256.FusedMultiplyAdd(y, k0, b0);
            b1 = Vector256.FusedMultiplyAdd(y, k1, b1);
            b2 = Vector256.FusedMultiplyAdd(y, k2, b2);
            b3 = Vector256.FusedMultiplyAdd(y, k3, b3);
        }
        var vScale = Vector256.Create(scale);
        (a0 * vScale).Store(scoresA); (a1 * vScale).Store(scoresA + 8); (a2 * vScale).Store(scoresA + 16); (a3 * vScale).Store(scoresA + 24);
        (b0 * vScale).Store(scoresB); (b1 * vScale).Store(scoresB + 8); (b2 * vScale).Store(scoresB + 16); (b3 * vScale).Store(scoresB + 24);
    }
}

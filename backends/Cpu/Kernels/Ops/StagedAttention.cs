using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// The attention the CPU queue runs: the same causal grouped-query attention as <see cref="Attention.Compute"/>, in two stages.
/// <para><b>Stage</b> (<see cref="StageKv"/>): each KV head's keys and values for the visible positions are converted to float
/// once, keys transposed to [headDim][positions] and values kept as [positions][headDim]. Reading the cache per query head
/// converted every F16 element once per query head of its group (8 times for a 32/4-head model) and once per token of a
/// prompt batch, which made attention 40% of a 512-token prompt.</para>
/// <para><b>Compute</b> (<see cref="ComputeHead"/>): scores for 32 positions at a time with SIMD lanes over positions
/// (q[i] broadcast, one FMA per element and 8 positions, four independent chains, no horizontal sums), softmax over the
/// visible positions, then the weighted sum of value rows.</para>
/// Memory: the two staging buffers hold 2 × KV heads × head size × visible positions floats (TinyLlama at 2048 positions:
/// 4 MiB; a 7B model with 32 KV heads of 128 at 4096 positions: 128 MiB), allocated once and grown with the context.
/// Restaging every call costs one pass over the visible cache, which is what reading it once costs anyway; keeping staged
/// positions across calls (only new ones converted) is the next step for long generations.
/// Every (token, head) is computed by the same arithmetic whatever the batch it came in, so splitting a prompt into batches
/// leaves results bit-identical; it differs from <see cref="Attention.Compute"/> only by float summation order.
/// </summary>
public static unsafe class StagedAttention
{
    /// <summary>Positions per score step: four 8-lane vectors.</summary>
    public const int PositionBlock = 32;

    /// <summary>Positions the staging buffers hold for a batch: every visible position, rounded up to <see cref="PositionBlock"/>.</summary>
    public static int Capacity(int nTokens, int firstPos) => (firstPos + nTokens + PositionBlock - 1) / PositionBlock * PositionBlock;

    /// <summary>Floats of one staging buffer (keys or values) for all KV heads.</summary>
    public static long StageLength(int nKvHead, int headDim, int capacity) => (long)nKvHead * headDim * capacity;

    /// <summary>Floats of score scratch per thread.</summary>
    public static int ScoresLength(int capacity) => capacity;

    /// <summary>
    /// Converts positions [<paramref name="positionStart"/>, <paramref name="positionEnd"/>) of KV head <paramref name="kvHead"/>
    /// into the staging buffers: <c>keysT[kvHead][i][j]</c> and <c>values[kvHead][j][i]</c> (each head's block is
    /// <c>headDim × capacity</c> floats). Positions from the visible count up to the capacity are written as zeros.
    /// </summary>
    public static void StageKv(void* kCache, void* vCache, KvCacheType kvType, int kvHead, int positionStart, int positionEnd, int headDim,
                               int kvRowStride, float* keysT, float* values, int capacity)
    {
        float* kt = keysT + (long)kvHead * headDim * capacity;
        float* vh = values + (long)kvHead * headDim * capacity;
        float* row = stackalloc float[headDim];
        for (int j = positionStart; j < positionEnd; j++)
        {
            long offset = (long)j * kvRowStride + (long)kvHead * headDim;
            LoadRow(kCache, kvType, offset, row, headDim);
            for (int i = 0; i < headDim; i++) kt[(long)i * capacity + j] = row[i];
            LoadRow(vCache, kvType, offset, vh + (long)j * headDim, headDim);
        }
    }

    /// <summary>Zeroes positions [<paramref name="visible"/>, <paramref name="capacity"/>) of one KV head's staged keys (score
    /// lanes past the last visible position then read zeros, never stale or non-finite values; they are not used).</summary>
    public static void ClearTail(int kvHead, int visible, int headDim, float* keysT, int capacity)
    {
        float* kt = keysT + (long)kvHead * headDim * capacity;
        for (int i = 0; i < headDim; i++) new Span<float>(kt + (long)i * capacity + visible, capacity - visible).Clear();
    }

    private static void LoadRow(void* cache, KvCacheType kvType, long offset, float* dst, int n)
    {
        if (kvType == KvCacheType.F16) Float16Conversion.ToSingle((Half*)cache + offset, dst, n);
        else Buffer.MemoryCopy((float*)cache + offset, dst, (long)n * sizeof(float), (long)n * sizeof(float));
    }

    /// <summary>
    /// Tokens [<paramref name="tokenStart"/>, <paramref name="tokenEnd"/>) of query head <paramref name="head"/> against the staged
    /// keys and values: <c>out[t][head] = softmax_j≤firstPos+t(q·k_j · scale) · v</c>. <paramref name="scores"/> holds at least
    /// <see cref="ScoresLength"/> floats and is private to the calling thread.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void ComputeHead(float* q, float* keysT, float* values, int capacity, float* output, int tokenStart, int tokenEnd,
                                   int firstPos, int nHead, int nKvHead, int headDim, int head, float* scores, float scale)
    {
        int kvHead = head / (nHead / nKvHead);
        float* kt = keysT + (long)kvHead * headDim * capacity;
        float* vh = values + (long)kvHead * headDim * capacity;
        long tokenStride = (long)nHead * headDim;
        for (int t = tokenStart; t < tokenEnd; t++)
        {
            int visible = firstPos + t + 1;
            float* qRow = q + t * tokenStride + (long)head * headDim;
            float* outRow = output + t * tokenStride + (long)head * headDim;
            Scores(qRow, kt, capacity, headDim, visible, scores, scale);
            RowOps.Softmax(scores, visible);
            WeightedValues(scores, vh, visible, headDim, outRow);
        }
    }

    /// <summary>scores[j] = scale · Σ_i q[i]·kT[i][j] for j &lt; visible (rounded up to whole blocks of 32).</summary>
    private static void Scores(float* q, float* kt, int capacity, int headDim, int visible, float* scores, float scale)
    {
        // Whole blocks of 32 positions: the capacity is a multiple of 32, so a block that starts below `visible` stays inside the
        // staging buffer; its lanes past `visible` are computed and ignored.
        var vScale = Vector256.Create(scale);
        for (int j = 0; j < visible; j += PositionBlock)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            float* k = kt + j;
            for (int i = 0; i < headDim; i++, k += capacity)
            {
                var qi = Vector256.Create(q[i]);
                a0 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k), a0);
                a1 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 24), a3);
            }
            (a0 * vScale).Store(scores + j);
            (a1 * vScale).Store(scores + j + 8);
            (a2 * vScale).Store(scores + j + 16);
            (a3 * vScale).Store(scores + j + 24);
        }
    }

    /// <summary>out[i] = Σ_j p[j]·v[j][i] over the visible positions.</summary>
    private static void WeightedValues(float* p, float* v, int visible, int headDim, float* output)
    {
        new Span<float>(output, headDim).Clear();
        for (int j = 0; j < visible; j++)
        {
            var w = Vector256.Create(p[j]);
            float* row = v + (long)j * headDim;
            int i = 0;
            for (; i + 8 <= headDim; i += 8) Vector256.FusedMultiplyAdd(w, Vector256.Load(row + i), Vector256.Load(output + i)).Store(output + i);
            for (; i < headDim; i++) output[i] = MathF.FusedMultiplyAdd(p[j], row[i], output[i]);
        }
    }
}

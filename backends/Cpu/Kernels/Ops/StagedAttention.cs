using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// The attention the CPU queue runs: the same causal grouped-query attention as <see cref="Attention.Compute"/>, in two stages.
/// <para><b>Stage</b> (<see cref="StageKv"/>): each KV head's keys and values for the visible positions are converted to float
/// once (F16 converted, Q8_0/Q4_0 blocks dequantized), keys transposed to [headDim][positions] and values kept as
/// [positions][headDim]. Reading the cache per query head converted every F16 element once per query head of its group (8 times
/// for a 32/4-head model) and once per token of a prompt batch, which made attention 40% of a 512-token prompt.</para>
/// <para><b>Compute</b> (<see cref="ComputeHead"/>): scores for 32 positions at a time with SIMD lanes over positions
/// (q[i] broadcast, one FMA per element and 8 positions, four independent chains, no horizontal sums), softmax over the
/// visible positions, then the weighted sum of value rows.</para>
/// Memory: the two staging buffers hold 2 × KV heads × head size × visible positions floats (TinyLlama at 2048 positions:
/// 4 MiB; a 7B model with 32 KV heads of 128 at 4096 positions: 128 MiB), allocated once and grown with the context.
/// Restaging every call costs one pass over the visible cache, which is what reading it once costs anyway. One-token steps
/// take <see cref="DecodeKvHead"/> instead (StagedAttention.Decode.cs): no staging buffers, each tile of the cache converted
/// once for every query head of its group (docs/batching.md#cpu-decode-attention).
/// Every (token, head) is computed by the same arithmetic whatever the batch it came in, so splitting a prompt into batches
/// leaves results bit-identical; it differs from <see cref="Attention.Compute"/> only by float summation order.
/// </summary>
public static unsafe partial class StagedAttention
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
        if (Attention.IsQuantized(kvType)) Attention.ValidateBlocks(kvType, headDim, kvRowStride);
        float* kt = keysT + (long)kvHead * headDim * capacity;
        float* vh = values + (long)kvHead * headDim * capacity;
        float* row = stackalloc float[headDim];
        int j = positionStart;
        if (headDim % 8 == 0 && Avx.IsSupported)
        {
            // Eight positions at a time: their key rows converted into a block of 8 × headDim floats, then transposed 8 × 8 so that
            // each dimension's 8 positions are one store (element by element, the transpose was most of a decode step's staging).
            float* block = stackalloc float[8 * headDim];
            for (; j + 8 <= positionEnd; j += 8)
            {
                long offset = (long)j * kvRowStride + (long)kvHead * headDim;
                TransposeKeyRows8(kCache, kvType, offset, kvRowStride, 8, headDim, block, kt + j, capacity);
                for (int r = 0; r < 8; r++) LoadRow(vCache, kvType, offset + (long)r * kvRowStride, vh + (long)(j + r) * headDim, headDim);
            }
        }
        for (; j < positionEnd; j++)
        {
            long offset = (long)j * kvRowStride + (long)kvHead * headDim;
            LoadRow(kCache, kvType, offset, row, headDim);
            for (int i = 0; i < headDim; i++) kt[(long)i * capacity + j] = row[i];
            LoadRow(vCache, kvType, offset, vh + (long)j * headDim, headDim);
        }
    }

    /// <summary>Eight key rows of one KV head from element <paramref name="firstOffset"/> on (<paramref name="kvRowStride"/> apart;
    /// rows from <paramref name="rows"/> on read as zeros), converted into <paramref name="block"/> (8 × headDim floats) and written
    /// transposed: <c>dst[i × dstStride + r]</c> is element i of row r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeKeyRows8(void* kCache, KvCacheType kvType, long firstOffset, int kvRowStride, int rows, int headDim, float* block,
                                          float* dst, long dstStride)
    {
        for (int r = 0; r < 8; r++)
        {
            if (r < rows) LoadRow(kCache, kvType, firstOffset + (long)r * kvRowStride, block + r * headDim, headDim);
            else new Span<float>(block + r * headDim, headDim).Clear();
        }
        for (int i = 0; i < headDim; i += 8) Transpose8(block + i, headDim, dst + (long)i * dstStride, dstStride);
    }

    /// <summary>Writes the transpose of the 8 × 8 floats at <paramref name="src"/> (rows <paramref name="srcStride"/> apart) to
    /// <paramref name="dst"/> (rows <paramref name="dstStride"/> apart).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose8(float* src, int srcStride, float* dst, long dstStride)
    {
        var r0 = Vector256.Load(src); var r1 = Vector256.Load(src + srcStride);
        var r2 = Vector256.Load(src + 2 * srcStride); var r3 = Vector256.Load(src + 3 * srcStride);
        var r4 = Vector256.Load(src + 4 * srcStride); var r5 = Vector256.Load(src + 5 * srcStride);
        var r6 = Vector256.Load(src + 6 * srcStride); var r7 = Vector256.Load(src + 7 * srcStride);
        // Pairs of rows interleaved, then quadruples, then the 128-bit halves swapped into place.
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var u0 = Avx.Shuffle(t0, t2, 0x44); var u1 = Avx.Shuffle(t0, t2, 0xEE);
        var u2 = Avx.Shuffle(t1, t3, 0x44); var u3 = Avx.Shuffle(t1, t3, 0xEE);
        var u4 = Avx.Shuffle(t4, t6, 0x44); var u5 = Avx.Shuffle(t4, t6, 0xEE);
        var u6 = Avx.Shuffle(t5, t7, 0x44); var u7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Permute2x128(u0, u4, 0x20).Store(dst);
        Avx.Permute2x128(u1, u5, 0x20).Store(dst + dstStride);
        Avx.Permute2x128(u2, u6, 0x20).Store(dst + 2 * dstStride);
        Avx.Permute2x128(u3, u7, 0x20).Store(dst + 3 * dstStride);
        Avx.Permute2x128(u0, u4, 0x31).Store(dst + 4 * dstStride);
        Avx.Permute2x128(u1, u5, 0x31).Store(dst + 5 * dstStride);
        Avx.Permute2x128(u2, u6, 0x31).Store(dst + 6 * dstStride);
        Avx.Permute2x128(u3, u7, 0x31).Store(dst + 7 * dstStride);
    }

    /// <summary>Zeroes positions [<paramref name="visible"/>, <paramref name="capacity"/>) of one KV head's staged keys (score
    /// lanes past the last visible position then read zeros, never stale or non-finite values; they are not used).</summary>
    public static void ClearTail(int kvHead, int visible, int headDim, float* keysT, int capacity)
    {
        float* kt = keysT + (long)kvHead * headDim * capacity;
        for (int i = 0; i < headDim; i++) new Span<float>(kt + (long)i * capacity + visible, capacity - visible).Clear();
    }

    /// <summary>
    /// Converts the <paramref name="n"/> cache elements starting at element <paramref name="offset"/> to float. For the quantized
    /// types both are whole blocks (checked once per <see cref="StageKv"/> call), so the row is <c>n / 32</c> blocks starting at byte
    /// <c>offset / 32 × block bytes</c>, decoded by the same routines as quantized weight rows (<see cref="RowDequantizer"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadRow(void* cache, KvCacheType kvType, long offset, float* dst, int n)
    {
        switch (kvType)
        {
            case KvCacheType.F16: Float16Conversion.ToSingle((Half*)cache + offset, dst, n); break;
            case KvCacheType.Q8_0: RowDequantizer.Q8_0((byte*)cache + (offset >> 5) * 34, dst, n >> 5, KernelIsaSupport.Best); break;
            case KvCacheType.Q4_0: RowDequantizer.Q4_0((byte*)cache + (offset >> 5) * 18, dst, n >> 5, KernelIsaSupport.Best); break;
            default: Buffer.MemoryCopy((float*)cache + offset, dst, (long)n * sizeof(float), (long)n * sizeof(float)); break;
        }
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
        // staging buffer; its lanes past `visible` are computed and ignored. Two blocks at a time where there are two: eight
        // independent FMA chains instead of four keep the FMA units busy (each chain waits on its previous FMA). Every lane's
        // chain is the same either way (over i in order, from zero), so the bits do not depend on the pairing.
        var vScale = Vector256.Create(scale);
        int j = 0;
        for (; j + PositionBlock < visible; j += 2 * PositionBlock)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
            float* k = kt + j;
            for (int i = 0; i < headDim; i++, k += capacity)
            {
                var qi = Vector256.Create(q[i]);
                a0 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k), a0);
                a1 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 24), a3);
                b0 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 32), b0);
                b1 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 40), b1);
                b2 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 48), b2);
                b3 = Vector256.FusedMultiplyAdd(qi, Vector256.Load(k + 56), b3);
            }
            (a0 * vScale).Store(scores + j);
            (a1 * vScale).Store(scores + j + 8);
            (a2 * vScale).Store(scores + j + 16);
            (a3 * vScale).Store(scores + j + 24);
            (b0 * vScale).Store(scores + j + 32);
            (b1 * vScale).Store(scores + j + 40);
            (b2 * vScale).Store(scores + j + 48);
            (b3 * vScale).Store(scores + j + 56);
        }
        for (; j < visible; j += PositionBlock)
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

    /// <summary>out[i] = Σ_j p[j]·v[j][i] over the visible positions: <see cref="AddWeightedRows"/> into a zeroed row.</summary>
    private static void WeightedValues(float* p, float* v, int visible, int headDim, float* output)
    {
        new Span<float>(output, headDim).Clear();
        AddWeightedRows(p, v, visible, headDim, output);
    }

    /// <summary>output[i] += Σ_j&lt;n p[j]·rows[j][i] (rows <paramref name="headDim"/> floats apart), each element's FMA chain
    /// continued from the value in <paramref name="output"/>, over j in order.</summary>
    /// <remarks>The sums are kept in registers, 64 (then 32, then 8) elements of the output at a time, over all rows: the output
    /// row in memory made every FMA wait for the previous row's store. Each element's chain is the same whatever the chunking,
    /// and continuing it from a stored float is exact, so summing in one call or tile by tile (<see cref="DecodeKvHead"/>) gives
    /// the same bits.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddWeightedRows(float* p, float* rows, int n, int headDim, float* output)
    {
        int i = 0;
        for (; i + 64 <= headDim; i += 64)
        {
            float* o = output + i;
            Vector256<float> a0 = Vector256.Load(o), a1 = Vector256.Load(o + 8), a2 = Vector256.Load(o + 16), a3 = Vector256.Load(o + 24),
                             a4 = Vector256.Load(o + 32), a5 = Vector256.Load(o + 40), a6 = Vector256.Load(o + 48), a7 = Vector256.Load(o + 56);
            float* row = rows + i;
            for (int j = 0; j < n; j++, row += headDim)
            {
                var w = Vector256.Create(p[j]);
                a0 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row), a0);
                a1 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 24), a3);
                a4 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 32), a4);
                a5 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 40), a5);
                a6 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 48), a6);
                a7 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 56), a7);
            }
            a0.Store(o); a1.Store(o + 8); a2.Store(o + 16); a3.Store(o + 24);
            a4.Store(o + 32); a5.Store(o + 40); a6.Store(o + 48); a7.Store(o + 56);
        }
        for (; i + 32 <= headDim; i += 32)
        {
            float* o = output + i;
            Vector256<float> a0 = Vector256.Load(o), a1 = Vector256.Load(o + 8), a2 = Vector256.Load(o + 16), a3 = Vector256.Load(o + 24);
            float* row = rows + i;
            for (int j = 0; j < n; j++, row += headDim)
            {
                var w = Vector256.Create(p[j]);
                a0 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row), a0);
                a1 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 8), a1);
                a2 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 16), a2);
                a3 = Vector256.FusedMultiplyAdd(w, Vector256.Load(row + 24), a3);
            }
            a0.Store(o); a1.Store(o + 8); a2.Store(o + 16); a3.Store(o + 24);
        }
        for (; i + 8 <= headDim; i += 8)
        {
            var a = Vector256.Load(output + i);
            float* row = rows + i;
            for (int j = 0; j < n; j++, row += headDim) a = Vector256.FusedMultiplyAdd(Vector256.Create(p[j]), Vector256.Load(row), a);
            a.Store(output + i);
        }
        for (; i < headDim; i++)
        {
            float a = output[i];
            for (int j = 0; j < n; j++) a = MathF.FusedMultiplyAdd(p[j], rows[(long)j * headDim + i], a);
            output[i] = a;
        }
    }
}

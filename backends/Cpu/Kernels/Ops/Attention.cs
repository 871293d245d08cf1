using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>Element type of a KV cache.</summary>
public enum KvCacheType
{
    /// <summary>32-bit floats.</summary>
    F32,
    /// <summary>IEEE half floats (half the memory; converted to float on the fly while reading).</summary>
    F16,
}

/// <summary>
/// Causal grouped-query attention over a KV cache for a batch of consecutive tokens:
/// out[t][h] = softmax_j≤p(q[t][h]·k[j][g] / sqrt(headDim)) · v[j][g], with p = firstPos + t and
/// g = h / (nHead / nKvHead). The cache must already hold the batch's own keys and values.
/// </summary>
public static unsafe class Attention
{
    /// <summary>Floats of score scratch one <see cref="Compute"/> call needs: one score per visible position.</summary>
    public static int ScratchLength(int nTokens, int firstPos) => firstPos + nTokens;

    /// <summary>
    /// Computes heads [headStart, headEnd) of every token of the batch, so threads can split the work by head.
    /// </summary>
    /// <param name="q">Queries [nTokens][nHead][headDim], already rotated.</param>
    /// <param name="kCache">Keys: position j, kv head g starts at element j·kvRowStride + g·headDim.</param>
    /// <param name="vCache">Values, laid out like the keys.</param>
    /// <param name="kvType">Element type of both caches.</param>
    /// <param name="output">Output [nTokens][nHead][headDim]; only the given heads are written.</param>
    /// <param name="kvRowStride">Elements from one cache position to the next (at least nKvHead·headDim).</param>
    /// <param name="scoresScratch">At least <see cref="ScratchLength"/> floats, private to the calling thread.</param>
    /// <param name="scale">Score scale; 0 (the default) means 1/sqrt(headDim).</param>
    public static void Compute(float* q, void* kCache, void* vCache, KvCacheType kvType, float* output,
        int nTokens, int firstPos, int nHead, int nKvHead, int headDim, int kvRowStride,
        int headStart, int headEnd, float* scoresScratch, float scale = 0f)
    {
        if (scale == 0f) scale = 1f / MathF.Sqrt(headDim);
        Validate(nTokens, firstPos, nHead, nKvHead, headDim, kvRowStride, headStart, headEnd);
        switch (kvType)
        {
            case KvCacheType.F32:
                Compute<F32KvReader>(q, kCache, vCache, output, nTokens, firstPos, nHead, nKvHead, headDim, kvRowStride, headStart, headEnd, scoresScratch, scale);
                break;
            case KvCacheType.F16:
                Compute<F16KvReader>(q, kCache, vCache, output, nTokens, firstPos, nHead, nKvHead, headDim, kvRowStride, headStart, headEnd, scoresScratch, scale);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kvType), kvType, "Unsupported KV cache element type.");
        }
    }

    private static void Compute<TKv>(float* q, void* kCache, void* vCache, float* output,
        int nTokens, int firstPos, int nHead, int nKvHead, int headDim, int kvRowStride,
        int headStart, int headEnd, float* scores, float scale) where TKv : struct, IKvReader
    {
        int groupSize = nHead / nKvHead;
        long tokenStride = (long)nHead * headDim;
        for (int t = 0; t < nTokens; t++)
        {
            int visible = firstPos + t + 1; // causal: positions 0..firstPos+t
            for (int h = headStart; h < headEnd; h++)
            {
                float* qRow = q + t * tokenStride + (long)h * headDim;
                float* outRow = output + t * tokenStride + (long)h * headDim;
                long kvHeadOffset = (long)(h / groupSize) * headDim;

                for (int j = 0; j < visible; j++)
                    scores[j] = Dot<TKv>(qRow, kCache, j * (long)kvRowStride + kvHeadOffset, headDim) * scale;
                RowOps.Softmax(scores, visible);

                new Span<float>(outRow, headDim).Clear();
                for (int j = 0; j < visible; j++)
                    AddScaled<TKv>(scores[j], vCache, j * (long)kvRowStride + kvHeadOffset, outRow, headDim);
            }
        }
    }

    /// <summary>Σ q[i]·k[offset + i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Dot<TKv>(float* q, void* k, long offset, int n) where TKv : struct, IKvReader
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var acc = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16)
                acc = Vector512.FusedMultiplyAdd(Vector512.Load(q + i), TKv.Load512(k, offset + i), acc);
            sum += Vector512.Sum(acc);
        }
        if (Vector256.IsHardwareAccelerated && n - i >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8)
                acc = Vector256.FusedMultiplyAdd(Vector256.Load(q + i), TKv.Load256(k, offset + i), acc);
            sum += Vector256.Sum(acc);
        }
        if (Vector128.IsHardwareAccelerated && n - i >= 4)
        {
            var acc = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4)
                acc = Vector128.FusedMultiplyAdd(Vector128.Load(q + i), TKv.Load128(k, offset + i), acc);
            sum += Vector128.Sum(acc);
        }
        for (; i < n; i++)
            sum += q[i] * TKv.Load(k, offset + i);
        return sum;
    }

    /// <summary>acc[i] += weight · v[offset + i].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddScaled<TKv>(float weight, void* v, long offset, float* acc, int n) where TKv : struct, IKvReader
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var w = Vector512.Create(weight);
            for (; i <= n - 16; i += 16)
                Vector512.FusedMultiplyAdd(w, TKv.Load512(v, offset + i), Vector512.Load(acc + i)).Store(acc + i);
        }
        if (Vector256.IsHardwareAccelerated)
        {
            var w = Vector256.Create(weight);
            for (; i <= n - 8; i += 8)
                Vector256.FusedMultiplyAdd(w, TKv.Load256(v, offset + i), Vector256.Load(acc + i)).Store(acc + i);
        }
        if (Vector128.IsHardwareAccelerated)
        {
            var w = Vector128.Create(weight);
            for (; i <= n - 4; i += 4)
                Vector128.FusedMultiplyAdd(w, TKv.Load128(v, offset + i), Vector128.Load(acc + i)).Store(acc + i);
        }
        for (; i < n; i++)
            acc[i] += weight * TKv.Load(v, offset + i);
    }

    internal static void Validate(int nTokens, int firstPos, int nHead, int nKvHead, int headDim, int kvRowStride, int headStart, int headEnd)
    {
        if (nTokens < 0) throw new ArgumentOutOfRangeException(nameof(nTokens), nTokens, "Token count must not be negative.");
        if (firstPos < 0) throw new ArgumentOutOfRangeException(nameof(firstPos), firstPos, "First position must not be negative.");
        if (headDim <= 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "Head dimension must be positive.");
        if (nHead <= 0 || nKvHead <= 0 || nHead % nKvHead != 0)
            throw new ArgumentException($"Head count {nHead} must be a positive multiple of the KV head count {nKvHead}.", nameof(nKvHead));
        if (kvRowStride < (long)nKvHead * headDim)
            throw new ArgumentOutOfRangeException(nameof(kvRowStride), kvRowStride, $"KV row stride must hold {nKvHead} heads of {headDim} elements.");
        if (headStart < 0 || headEnd < headStart || headEnd > nHead)
            throw new ArgumentOutOfRangeException(nameof(headStart), $"Head range [{headStart}, {headEnd}) is outside [0, {nHead}).");
    }
}

/// <summary>Reads KV cache elements as floats, at every vector width; one implementation per cache element type.</summary>
internal unsafe interface IKvReader
{
    static abstract float Load(void* row, long index);
    static abstract Vector128<float> Load128(void* row, long index);
    static abstract Vector256<float> Load256(void* row, long index);
    static abstract Vector512<float> Load512(void* row, long index);
}

/// <summary>F32 cache: plain loads.</summary>
internal readonly unsafe struct F32KvReader : IKvReader
{
    public static float Load(void* row, long index) => ((float*)row)[index];
    public static Vector128<float> Load128(void* row, long index) => Vector128.Load((float*)row + index);
    public static Vector256<float> Load256(void* row, long index) => Vector256.Load((float*)row + index);
    public static Vector512<float> Load512(void* row, long index) => Vector512.Load((float*)row + index);
}

/// <summary>F16 cache: loads half as many bytes, zero-extends each half into a 32-bit lane and converts.</summary>
internal readonly unsafe struct F16KvReader : IKvReader
{
    public static float Load(void* row, long index) => (float)((Half*)row)[index];

    public static Vector128<float> Load128(void* row, long index)
        => Float16Conversion.HalfBitsToSingle(Vector128.WidenLower(Vector64.Load((ushort*)row + index).ToVector128Unsafe()));

    public static Vector256<float> Load256(void* row, long index)
        => Float16Conversion.HalfBitsToSingle(Vector256.WidenLower(Vector128.Load((ushort*)row + index).ToVector256Unsafe()));

    public static Vector512<float> Load512(void* row, long index)
        => Float16Conversion.HalfBitsToSingle(Vector512.WidenLower(Vector256.Load((ushort*)row + index).ToVector512Unsafe()));
}

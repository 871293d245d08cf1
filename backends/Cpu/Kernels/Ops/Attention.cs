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
    /// <summary>GGUF Q8_0 blocks, 34 bytes per 32 elements (f16 d, 32 int8; value d·q). A cache row of each position is
    /// stored as whole blocks, so the head size and the row stride must be multiples of 32 (docs/batching.md#quantized-kv-cache).</summary>
    Q8_0,
    /// <summary>GGUF Q4_0 blocks, 18 bytes per 32 elements (f16 d, 16 bytes of nibbles: element j low, j + 16 high; value
    /// d·(q − 8)). The same layout rules as <see cref="Q8_0"/>.</summary>
    Q4_0,
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
            case KvCacheType.Q8_0:
                ValidateBlocks(kvType, headDim, kvRowStride);
                Compute<Q8_0KvReader>(q, kCache, vCache, output, nTokens, firstPos, nHead, nKvHead, headDim, kvRowStride, headStart, headEnd, scoresScratch, scale);
                break;
            case KvCacheType.Q4_0:
                ValidateBlocks(kvType, headDim, kvRowStride);
                Compute<Q4_0KvReader>(q, kCache, vCache, output, nTokens, firstPos, nHead, nKvHead, headDim, kvRowStride, headStart, headEnd, scoresScratch, scale);
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

    /// <summary>True for the block-quantized cache types (<see cref="KvCacheType.Q8_0"/>, <see cref="KvCacheType.Q4_0"/>).</summary>
    public static bool IsQuantized(KvCacheType type) => type is KvCacheType.Q8_0 or KvCacheType.Q4_0;

    /// <summary>
    /// A quantized cache stores every position's row as whole 32-element blocks, and each head is read from the start of a
    /// block: the head size and the row stride (in elements) must be multiples of 32.
    /// </summary>
    internal static void ValidateBlocks(KvCacheType type, int headDim, int kvRowStride)
    {
        if (headDim % 32 != 0 || kvRowStride % 32 != 0)
            throw new ArgumentException($"a {type} KV cache holds blocks of 32 elements: head size {headDim} and row stride {kvRowStride} must be multiples of 32", nameof(headDim));
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

/// <summary>
/// Q8_0 cache: element i of a row lives in block i / 32 (34 bytes: f16 d, 32 int8) at byte 2 + i % 32. A vector of 4, 8 or
/// 16 elements starts at a multiple of its width (the caller's offsets are whole blocks plus multiples of the width), so it
/// never crosses a block; its int8 values are sign-extended, converted and scaled by the block's d.
/// </summary>
internal readonly unsafe struct Q8_0KvReader : IKvReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* Block(void* row, long index) => (byte*)row + (index >> 5) * 34;

    public static float Load(void* row, long index)
    {
        byte* b = Block(row, index);
        return HalfConversion.Load(b) * (sbyte)b[2 + (index & 31)];
    }

    public static Vector128<float> Load128(void* row, long index)
    {
        byte* b = Block(row, index);
        var q = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<int>(b + 2 + (index & 31))).AsSByte();
        return Vector128.ConvertToSingle(Vector128.WidenLower(Vector128.WidenLower(q))) * HalfConversion.Load(b);
    }

    public static Vector256<float> Load256(void* row, long index)
    {
        byte* b = Block(row, index);
        var q = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<long>(b + 2 + (index & 31))).AsSByte();
        return Vector256.ConvertToSingle(Vector256.WidenLower(Vector128.WidenLower(q).ToVector256Unsafe())) * HalfConversion.Load(b);
    }

    public static Vector512<float> Load512(void* row, long index)
    {
        byte* b = Block(row, index);
        var q = Vector128.LoadUnsafe(ref *(sbyte*)(b + 2 + (index & 31)));
        return Vector512.ConvertToSingle(Vector512.WidenLower(Vector256.WidenLower(q.ToVector256Unsafe()).ToVector512Unsafe())) * HalfConversion.Load(b);
    }
}

/// <summary>
/// Q4_0 cache: element i of a row lives in block i / 32 (18 bytes: f16 d, 16 bytes of nibbles); with e = i % 32 it is the low
/// nibble of byte 2 + e for e &lt; 16, else the high nibble of byte 2 + e − 16; its value is d·(q − 8). Vectors never cross a
/// block or the low/high half (see <see cref="Q8_0KvReader"/>): they read consecutive bytes and one shift.
/// </summary>
internal readonly unsafe struct Q4_0KvReader : IKvReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* Block(void* row, long index) => (byte*)row + (index >> 5) * 18;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Shift(long index) => (int)(index & 16) >> 2; // 0 for the low half of a block, 4 for the high half

    public static float Load(void* row, long index)
    {
        byte* b = Block(row, index);
        return HalfConversion.Load(b) * (((b[2 + (index & 15)] >> Shift(index)) & 0xF) - 8);
    }

    public static Vector128<float> Load128(void* row, long index)
    {
        byte* b = Block(row, index);
        var bytes = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<uint>(b + 2 + (index & 15))).AsByte();
        var q = (Vector128.WidenLower(Vector128.WidenLower(bytes)).AsInt32() >> Shift(index)) & Vector128.Create(0xF);
        return Vector128.ConvertToSingle(q - Vector128.Create(8)) * HalfConversion.Load(b);
    }

    public static Vector256<float> Load256(void* row, long index)
    {
        byte* b = Block(row, index);
        var bytes = Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(b + 2 + (index & 15))).AsByte();
        var q = (Vector256.WidenLower(Vector128.WidenLower(bytes).ToVector256Unsafe()).AsInt32() >> Shift(index)) & Vector256.Create(0xF);
        return Vector256.ConvertToSingle(q - Vector256.Create(8)) * HalfConversion.Load(b);
    }

    public static Vector512<float> Load512(void* row, long index)
    {
        byte* b = Block(row, index);
        var bytes = Vector128.LoadUnsafe(ref *(b + 2 + (index & 15)));
        var q = (Vector512.WidenLower(Vector256.WidenLower(bytes.ToVector256Unsafe()).ToVector512Unsafe()).AsInt32() >> Shift(index)) & Vector512.Create(0xF);
        return Vector512.ConvertToSingle(q - Vector512.Create(8)) * HalfConversion.Load(b);
    }
}

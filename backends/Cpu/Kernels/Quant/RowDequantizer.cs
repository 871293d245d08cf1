using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// Decodes one stored row to float32 (embedding lookups, and ops that want float weights). The arithmetic per
/// element is the same as PluginEngine.Core's reference Dequantizer, so results are bit-identical to it.
/// </summary>
public static unsafe class RowDequantizer
{
    /// <summary>Initializes <see cref="HalfConversion"/> before any decoder is compiled, so optimized decoders read its table
    /// without a class-initialization check in their loops (see QuantDot's static constructor).</summary>
    static RowDequantizer() => RuntimeHelpers.RunClassConstructor(typeof(HalfConversion).TypeHandle);

    /// <summary>Types <see cref="DequantizeRow(GgmlType, byte*, float*, long)"/> decodes.</summary>
    public static bool IsSupported(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16
        or GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.Q8_K;

    /// <summary>Decodes <paramref name="n"/> elements (a whole number of blocks) of <paramref name="type"/> at
    /// <paramref name="src"/> into <paramref name="dst"/>.</summary>
    public static void DequantizeRow(GgmlType type, byte* src, float* dst, long n)
        => DequantizeRow(type, src, dst, n, KernelIsaSupport.Best);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void DequantizeRow(GgmlType type, byte* src, float* dst, long n, KernelIsa isa)
    {
        if (!IsSupported(type)) throw new NotSupportedException($"row dequantization of {type} is not supported");
        KernelIsaSupport.Require(isa);
        var info = GgmlTypes.Get(type);
        if (n < 0 || n % info.BlockSize != 0)
            throw new ArgumentException($"a {type} row of {n} elements is not a whole number of {info.BlockSize}-element blocks", nameof(n));
        long blocks = n / info.BlockSize;
        switch (type)
        {
            case GgmlType.F32: Buffer.MemoryCopy(src, dst, n * 4, n * 4); break;
            case GgmlType.F16: F16(src, dst, n, isa); break;
            case GgmlType.BF16: BF16(src, dst, n, isa); break;
            case GgmlType.Q8_0: Q8_0(src, dst, blocks, isa); break;
            case GgmlType.Q4_0: Q4_0(src, dst, blocks, isa); break;
            case GgmlType.Q4_K: for (long b = 0; b < blocks; b++, src += 144, dst += 256) Q4_K(src, dst); break;
            case GgmlType.Q5_K: for (long b = 0; b < blocks; b++, src += 176, dst += 256) Q5_K(src, dst); break;
            case GgmlType.Q6_K: for (long b = 0; b < blocks; b++, src += 210, dst += 256) Q6_K(src, dst); break;
            case GgmlType.Q8_K:
                for (long b = 0; b < blocks; b++, src += 292, dst += 256)
                {
                    float d = Unsafe.ReadUnaligned<float>(src);
                    for (int i = 0; i < 256; i++) dst[i] = d * (sbyte)src[4 + i];
                }
                break;
        }
    }

    /// <summary>
    /// Decodes <paramref name="blocks"/> Q8_0 blocks (f16 d, 32 int8): y = d · q. The vector path performs the same two
    /// operations per element (int → float, one product), so every level gives the scalar loop's bits. Also the KV cache's
    /// reader (StagedAttention), which calls it per head row: no checks here.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Q8_0(byte* src, float* dst, long blocks, KernelIsa isa)
    {
        if (isa == KernelIsa.Scalar)
        {
            for (long b = 0; b < blocks; b++, src += 34, dst += 32)
            {
                float d = HalfConversion.Load(src);
                for (int i = 0; i < 32; i++) dst[i] = d * (sbyte)src[2 + i];
            }
            return;
        }
        for (long b = 0; b < blocks; b++, src += 34, dst += 32)
        {
            var d = Vector256.Create(HalfConversion.Load(src));
            sbyte* q = (sbyte*)src + 2;
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(q)) * d).Store(dst);
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(q + 8)) * d).Store(dst + 8);
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(q + 16)) * d).Store(dst + 16);
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(q + 24)) * d).Store(dst + 24);
        }
    }

    /// <summary>
    /// Decodes <paramref name="blocks"/> Q4_0 blocks (f16 d, 16 bytes: element j in the low nibble of byte j, element j + 16 in
    /// its high nibble): y = d · (q − 8). As <see cref="Q8_0(byte*, float*, long, KernelIsa)"/>: the scalar loop's bits at every level.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Q4_0(byte* src, float* dst, long blocks, KernelIsa isa)
    {
        if (isa == KernelIsa.Scalar)
        {
            for (long b = 0; b < blocks; b++, src += 18, dst += 32)
            {
                float d = HalfConversion.Load(src);
                for (int j = 0; j < 16; j++)
                {
                    dst[j] = d * ((src[2 + j] & 0xF) - 8);
                    dst[j + 16] = d * ((src[2 + j] >> 4) - 8);
                }
            }
            return;
        }
        var mask = Vector128.Create((byte)0x0F);
        var eight = Vector256.Create(8);
        for (long b = 0; b < blocks; b++, src += 18, dst += 32)
        {
            var d = Vector256.Create(HalfConversion.Load(src));
            var bytes = Vector128.LoadUnsafe(ref *(src + 2));
            var lo = bytes & mask;
            var hi = Vector128.ShiftRightLogical(bytes, 4);
            // vpmovzxbd widens the low 8 bytes of its operand; the upper 8 are shifted down first.
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(lo) - eight) * d).Store(dst);
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(lo, 8)) - eight) * d).Store(dst + 8);
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(hi) - eight) * d).Store(dst + 16);
            (Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(hi, 8)) - eight) * d).Store(dst + 24);
        }
    }

    private static void F16(byte* src, float* dst, long n, KernelIsa isa)
    {
        ushort* h = (ushort*)src;
        long i = 0;
        if (isa != KernelIsa.Scalar)
            for (; i + 8 <= n; i += 8) HalfConversion.ToSingle(Avx2.ConvertToVector256Int32(h + i).AsUInt32()).Store(dst + i);
        for (; i < n; i++) dst[i] = HalfConversion.Table[h[i]];
    }

    private static void BF16(byte* src, float* dst, long n, KernelIsa isa)
    {
        ushort* h = (ushort*)src;
        long i = 0;
        if (isa != KernelIsa.Scalar)
            for (; i + 8 <= n; i += 8) (Avx2.ConvertToVector256Int32(h + i).AsUInt32() << 16).AsSingle().Store(dst + i);
        for (; i < n; i++) dst[i] = BitConverter.Int32BitsToSingle(h[i] << 16);
    }

    private static void ScaleMin(byte* s, int j, out int scale, out int min)
    {
        if (j < 4) { scale = s[j] & 63; min = s[j + 4] & 63; }
        else { scale = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4); min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
    }

    private static void Q4_K(byte* b, float* y)
    {
        float d = HalfConversion.Load(b), dmin = HalfConversion.Load(b + 2);
        for (int c = 0; c < 4; c++)
        {
            ScaleMin(b + 4, 2 * c, out int s0, out int m0);
            ScaleMin(b + 4, 2 * c + 1, out int s1, out int m1);
            float d0 = d * s0, min0 = dmin * m0, d1 = d * s1, min1 = dmin * m1;
            byte* qs = b + 16 + 32 * c;
            for (int l = 0; l < 32; l++)
            {
                y[64 * c + l] = d0 * (qs[l] & 0xF) - min0;
                y[64 * c + 32 + l] = d1 * (qs[l] >> 4) - min1;
            }
        }
    }

    private static void Q5_K(byte* b, float* y)
    {
        float d = HalfConversion.Load(b), dmin = HalfConversion.Load(b + 2);
        byte* qh = b + 16;
        for (int c = 0; c < 4; c++)
        {
            ScaleMin(b + 4, 2 * c, out int s0, out int m0);
            ScaleMin(b + 4, 2 * c + 1, out int s1, out int m1);
            float d0 = d * s0, min0 = dmin * m0, d1 = d * s1, min1 = dmin * m1;
            byte* qs = b + 48 + 32 * c;
            for (int l = 0; l < 32; l++)
            {
                y[64 * c + l] = d0 * ((qs[l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4)) - min0;
                y[64 * c + 32 + l] = d1 * ((qs[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4)) - min1;
            }
        }
    }

    private static void Q6_K(byte* b, float* y)
    {
        float d = HalfConversion.Load(b + 208);
        sbyte* sc = (sbyte*)b + 192;
        for (int h = 0; h < 2; h++)
        {
            byte* ql = b + 64 * h;
            byte* qh = b + 128 + 32 * h;
            for (int l = 0; l < 32; l++)
            {
                int e = 128 * h + l;
                y[e] = d * sc[e / 16] * (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                y[e + 32] = d * sc[(e + 32) / 16] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                y[e + 64] = d * sc[(e + 64) / 16] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                y[e + 96] = d * sc[(e + 96) / 16] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
    }
}

using PluginEngine.Abstractions;

namespace PluginEngine.Core.Quantization;

/// <summary>
/// Byte offsets inside the GGUF blocks this project reads and writes, and the small scalar helpers
/// (half/bfloat16 conversion, K-quant 6-bit scale packing) that the reference quantizer and
/// dequantizer share. Layouts follow ggml's <c>block_*</c> structs, which are packed (no padding).
/// </summary>
public static class BlockLayouts
{
    /// <summary>Elements in a Q4_0/Q8_0 block.</summary>
    public const int QK = 32;

    /// <summary>Elements in a K-quant super-block (Q4_K, Q5_K, Q6_K, Q8_K).</summary>
    public const int QKK = 256;

    // Q4_0: f16 d | u8 qs[16]; element j (j < 16) is the low nibble of qs[j], element j+16 the high nibble; value = d * (q - 8).
    // Q8_0: f16 d | i8 qs[32]; value = d * q.
    // Q4_K: f16 d | f16 dmin | u8 scales[12] | u8 qs[128].
    // Q5_K: f16 d | f16 dmin | u8 scales[12] | u8 qh[32] | u8 qs[128].
    // Q6_K: u8 ql[128] | u8 qh[64] | i8 scales[16] | f16 d.
    // Q8_K: f32 d | i8 qs[256] | i16 bsums[16] (sum of each 16 consecutive qs).

    /// <summary>Offset of Q4_K/Q5_K's packed 6-bit scales and mins.</summary>
    public const int KScalesOffset = 4;
    /// <summary>Offset of Q4_K's 4-bit quants.</summary>
    public const int Q4KQsOffset = 16;
    /// <summary>Offset of Q5_K's high-bit plane.</summary>
    public const int Q5KQhOffset = 16;
    /// <summary>Offset of Q5_K's low 4-bit quants.</summary>
    public const int Q5KQsOffset = 48;
    /// <summary>Offset of Q6_K's high 2-bit plane.</summary>
    public const int Q6KQhOffset = 128;
    /// <summary>Offset of Q6_K's int8 sub-block scales.</summary>
    public const int Q6KScalesOffset = 192;
    /// <summary>Offset of Q6_K's f16 super-block scale.</summary>
    public const int Q6KDOffset = 208;
    /// <summary>Offset of Q8_K's int8 quants.</summary>
    public const int Q8KQsOffset = 4;
    /// <summary>Offset of Q8_K's int16 sums of 16 quants.</summary>
    public const int Q8KBsumsOffset = 260;

    /// <summary>IEEE half bits to float (exact).</summary>
    public static float HalfToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>Float to IEEE half bits, rounding to nearest even (what F16C and ggml do).</summary>
    public static ushort FloatToHalf(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>Float rounded to the nearest half and back: the value a stored f16 scale really has.</summary>
    public static float RoundToHalf(float value) => HalfToFloat(FloatToHalf(value));

    /// <summary>bfloat16 bits to float: they are the top 16 bits of the float32.</summary>
    public static float BF16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Float to bfloat16 bits, rounding to nearest even; NaN stays a (quiet) NaN.</summary>
    public static ushort FloatToBF16(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if ((u & 0x7fffffff) > 0x7f800000) return (ushort)((u >> 16) | 0x40); // keep NaN a NaN after truncation
        return (ushort)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
    }

    /// <summary>
    /// Unpacks the 6-bit scale and min of sub-block <paramref name="j"/> (0..7) from Q4_K/Q5_K's
    /// 12 scale bytes: sub-blocks 0..3 keep their low 6 bits in bytes j and j+4; sub-blocks 4..7 keep
    /// their low 4 bits in the nibbles of byte j+4 and their top 2 bits in the spare top bits of bytes j-4 and j.
    /// </summary>
    public static void UnpackScaleMin(ReadOnlySpan<byte> scales, int j, out int scale, out int min)
    {
        if (j < 4)
        {
            scale = scales[j] & 63;
            min = scales[j + 4] & 63;
        }
        else
        {
            scale = (scales[j + 4] & 0xF) | ((scales[j - 4] >> 6) << 4);
            min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        }
    }

    /// <summary>Inverse of <see cref="UnpackScaleMin"/> for all eight sub-blocks (values 0..63).</summary>
    public static void PackScaleMins(ReadOnlySpan<byte> scale6, ReadOnlySpan<byte> min6, Span<byte> scales12)
    {
        scales12[..12].Clear();
        for (int j = 0; j < 8; j++)
        {
            int s = scale6[j], m = min6[j];
            if (s > 63 || m > 63) throw new ArgumentOutOfRangeException(nameof(scale6), $"sub-block {j}: scale {s} / min {m} exceed 6 bits");
            if (j < 4)
            {
                scales12[j] |= (byte)s;
                scales12[j + 4] |= (byte)m;
            }
            else
            {
                scales12[j + 4] = (byte)((s & 0xF) | ((m & 0xF) << 4));
                scales12[j - 4] |= (byte)((s >> 4) << 6);
                scales12[j] |= (byte)((m >> 4) << 6);
            }
        }
    }

    /// <summary>Throws unless <paramref name="type"/> is one of the types this reference code handles.</summary>
    /// <summary>True for the types the reference quantizer and dequantizer handle.</summary>
    internal static bool IsReferenceType(GgmlType type) => type is GgmlType.F32 or GgmlType.F16 or GgmlType.BF16
        or GgmlType.Q8_0 or GgmlType.Q4_0 or GgmlType.Q4_K or GgmlType.Q5_K or GgmlType.Q6_K or GgmlType.Q8_K;

    internal static GgmlTypeInfo RequireSupported(GgmlType type, string operation)
    {
        switch (type)
        {
            case var t when IsReferenceType(t):
                return GgmlTypes.Get(type);
            default:
                throw new NotSupportedException($"{operation}: type {type} is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K, Q8_K)");
        }
    }

    /// <summary>Checks that <paramref name="elements"/> floats and <paramref name="bytes"/> bytes are the same row in <paramref name="info"/>'s layout.</summary>
    internal static void RequireMatchingRow(GgmlTypeInfo info, int elements, int bytes, string operation)
    {
        if (elements % info.BlockSize != 0)
            throw new ArgumentException($"{operation}: {info.Type} stores blocks of {info.BlockSize} elements; {elements} elements is not a whole number of blocks");
        long need = info.RowSize(elements);
        if (bytes != need)
            throw new ArgumentException($"{operation}: {elements} elements of {info.Type} take {need} bytes ({elements / info.BlockSize} blocks of {info.BytesPerBlock} B), but the byte span has {bytes}");
    }
}

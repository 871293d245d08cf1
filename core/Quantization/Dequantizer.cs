using System.Buffers.Binary;
using PluginEngine.Abstractions;
using static PluginEngine.Core.Quantization.BlockLayouts;

namespace PluginEngine.Core.Quantization;

/// <summary>
/// Scalar reference decoding of GGUF rows to float32, written directly from the block definitions.
/// Slow on purpose: it is the oracle the fast CPU kernels are tested against.
/// </summary>
public static class Dequantizer
{
    /// <summary>True when <see cref="Dequantize"/> can decode <paramref name="type"/>.</summary>
    public static bool IsSupported(GgmlType type) => IsReferenceType(type);

    /// <summary>
    /// Decodes <paramref name="src"/> (a whole number of blocks of <paramref name="type"/>) into
    /// <paramref name="dst"/>, whose length is the element count. Throws when the lengths disagree.
    /// </summary>
    public static void Dequantize(GgmlType type, ReadOnlySpan<byte> src, Span<float> dst)
    {
        var info = RequireSupported(type, "Dequantize");
        RequireMatchingRow(info, dst.Length, src.Length, "Dequantize");
        int blocks = dst.Length / info.BlockSize;
        for (int b = 0; b < blocks; b++)
        {
            var block = src.Slice(b * info.BytesPerBlock, info.BytesPerBlock);
            var y = dst.Slice(b * info.BlockSize, info.BlockSize);
            switch (type)
            {
                case GgmlType.F32: y[0] = BinaryPrimitives.ReadSingleLittleEndian(block); break;
                case GgmlType.F16: y[0] = HalfToFloat(BinaryPrimitives.ReadUInt16LittleEndian(block)); break;
                case GgmlType.BF16: y[0] = BF16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(block)); break;
                case GgmlType.Q8_0: Q8_0(block, y); break;
                case GgmlType.Q4_0: Q4_0(block, y); break;
                case GgmlType.Q4_K: Q4_K(block, y); break;
                case GgmlType.Q5_K: Q5_K(block, y); break;
                case GgmlType.Q6_K: Q6_K(block, y); break;
                case GgmlType.Q8_K: Q8_K(block, y); break;
            }
        }
    }

    private static float Half(ReadOnlySpan<byte> b, int offset) => HalfToFloat(BinaryPrimitives.ReadUInt16LittleEndian(b[offset..]));

    private static void Q8_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        for (int i = 0; i < QK; i++) y[i] = d * (sbyte)b[2 + i];
    }

    private static void Q4_0(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0);
        for (int j = 0; j < QK / 2; j++)
        {
            byte q = b[2 + j];
            y[j] = d * ((q & 0xF) - 8);
            y[j + QK / 2] = d * ((q >> 4) - 8);
        }
    }

    private static void Q4_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0), dmin = Half(b, 2);
        var scales = b.Slice(KScalesOffset, 12);
        var qs = b.Slice(Q4KQsOffset, 128);
        // Each 32 bytes of qs hold 64 elements: low nibbles are sub-block 2c, high nibbles sub-block 2c+1.
        for (int c = 0; c < 4; c++)
        {
            UnpackScaleMin(scales, 2 * c, out int s0, out int m0);
            UnpackScaleMin(scales, 2 * c + 1, out int s1, out int m1);
            float d0 = d * s0, min0 = dmin * m0, d1 = d * s1, min1 = dmin * m1;
            for (int l = 0; l < 32; l++)
            {
                byte q = qs[32 * c + l];
                y[64 * c + l] = d0 * (q & 0xF) - min0;
                y[64 * c + 32 + l] = d1 * (q >> 4) - min1;
            }
        }
    }

    private static void Q5_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, 0), dmin = Half(b, 2);
        var scales = b.Slice(KScalesOffset, 12);
        var qh = b.Slice(Q5KQhOffset, 32);
        var qs = b.Slice(Q5KQsOffset, 128);
        // Like Q4_K, plus a fifth bit: for chunk c, bit 2c of qh[l] belongs to element 64c+l and bit 2c+1 to element 64c+32+l.
        for (int c = 0; c < 4; c++)
        {
            UnpackScaleMin(scales, 2 * c, out int s0, out int m0);
            UnpackScaleMin(scales, 2 * c + 1, out int s1, out int m1);
            float d0 = d * s0, min0 = dmin * m0, d1 = d * s1, min1 = dmin * m1;
            for (int l = 0; l < 32; l++)
            {
                byte q = qs[32 * c + l];
                int lo = (q & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4);
                int hi = (q >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
                y[64 * c + l] = d0 * lo - min0;
                y[64 * c + 32 + l] = d1 * hi - min1;
            }
        }
    }

    private static void Q6_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = Half(b, Q6KDOffset);
        var ql = b[..128];
        var qh = b.Slice(Q6KQhOffset, 64);
        var sc = b.Slice(Q6KScalesOffset, 16);
        // Two halves of 128 elements; in half h, ql[64h + l] holds elements l (low nibble) and 64+l (high nibble),
        // ql[64h + 32 + l] holds 32+l and 96+l, and qh[32h + l] holds the 2 top bits of l, 32+l, 64+l, 96+l.
        // Scale i covers elements 16i..16i+15.
        for (int h = 0; h < 2; h++)
        {
            for (int l = 0; l < 32; l++)
            {
                int a = ql[64 * h + l], bb = ql[64 * h + 32 + l], hb = qh[32 * h + l];
                int q0 = ((a & 0xF) | ((hb & 3) << 4)) - 32;
                int q1 = ((bb & 0xF) | (((hb >> 2) & 3) << 4)) - 32;
                int q2 = ((a >> 4) | (((hb >> 4) & 3) << 4)) - 32;
                int q3 = ((bb >> 4) | (((hb >> 6) & 3) << 4)) - 32;
                int e = 128 * h + l;
                y[e] = d * (sbyte)sc[e / 16] * q0;
                y[e + 32] = d * (sbyte)sc[(e + 32) / 16] * q1;
                y[e + 64] = d * (sbyte)sc[(e + 64) / 16] * q2;
                y[e + 96] = d * (sbyte)sc[(e + 96) / 16] * q3;
            }
        }
    }

    private static void Q8_K(ReadOnlySpan<byte> b, Span<float> y)
    {
        float d = BinaryPrimitives.ReadSingleLittleEndian(b);
        for (int i = 0; i < QKK; i++) y[i] = d * (sbyte)b[Q8KQsOffset + i];
    }
}

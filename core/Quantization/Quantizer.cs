using System.Buffers.Binary;
using PluginEngine.Abstractions;
using static PluginEngine.Core.Quantization.BlockLayouts;

namespace PluginEngine.Core.Quantization;

/// <summary>
/// Scalar reference encoding of float32 rows into GGUF blocks. The block formats are exact (llama.cpp
/// reads what this writes identically); the K-quant scale choice is a plain per-sub-block min/max fit,
/// not llama.cpp's iterative search, so errors are somewhat larger than llama-quantize's.
/// Q8_0 and Q8_K use exactly the rounding the CPU backend's activation quantizer uses, so this is also
/// the oracle for on-the-fly activation quantization.
/// </summary>
public static class Quantizer
{
    /// <summary>
    /// Encodes <paramref name="src"/> (a whole number of blocks of <paramref name="type"/>) into
    /// <paramref name="dst"/>, which must be exactly the row's byte size.
    /// </summary>
    public static void Quantize(GgmlType type, ReadOnlySpan<float> src, Span<byte> dst)
    {
        var info = RequireSupported(type, "Quantize");
        RequireMatchingRow(info, src.Length, dst.Length, "Quantize");
        int blocks = src.Length / info.BlockSize;
        Span<byte> levels = stackalloc byte[QKK];
        for (int b = 0; b < blocks; b++)
        {
            var x = src.Slice(b * info.BlockSize, info.BlockSize);
            var block = dst.Slice(b * info.BytesPerBlock, info.BytesPerBlock);
            switch (type)
            {
                case GgmlType.F32: BinaryPrimitives.WriteSingleLittleEndian(block, x[0]); break;
                case GgmlType.F16: BinaryPrimitives.WriteUInt16LittleEndian(block, FloatToHalf(x[0])); break;
                case GgmlType.BF16: BinaryPrimitives.WriteUInt16LittleEndian(block, FloatToBF16(x[0])); break;
                case GgmlType.Q8_0: Q8_0(x, block); break;
                case GgmlType.Q4_0: Q4_0(x, block); break;
                case GgmlType.Q4_K: Q4_K(x, block, levels); break;
                case GgmlType.Q5_K: Q5_K(x, block, levels); break;
                case GgmlType.Q6_K: Q6_K(x, block, levels); break;
                case GgmlType.Q8_K: Q8_K(x, block); break;
            }
        }
    }

    /// <summary>Round half to even, as SIMD conversion (cvtps2dq) does by default, so the fast path matches exactly.</summary>
    private static int RoundEven(float v) => (int)MathF.Round(v, MidpointRounding.ToEven);

    private static float MaxAbs(ReadOnlySpan<float> x)
    {
        float amax = 0;
        foreach (float v in x) amax = MathF.Max(amax, MathF.Abs(v));
        return amax;
    }

    /// <summary>
    /// Q8_0: d = max|x| / 127 stored as f16; q = round(x / d) using the unrounded d.
    /// (The activation quantizer in the CPU backend computes exactly these operations.)
    /// </summary>
    private static void Q8_0(ReadOnlySpan<float> x, Span<byte> b)
    {
        float d = MaxAbs(x) / 127f;
        float id = d != 0 ? 1f / d : 0f;
        BinaryPrimitives.WriteUInt16LittleEndian(b, FloatToHalf(d));
        for (int i = 0; i < QK; i++) b[2 + i] = (byte)(sbyte)Math.Clamp(RoundEven(x[i] * id), -127, 127);
    }

    /// <summary>
    /// Q4_0: the element of largest magnitude (with its sign) maps to level -8 exactly, so d = max / -8;
    /// other elements are rounded to the nearest of the 16 levels.
    /// </summary>
    private static void Q4_0(ReadOnlySpan<float> x, Span<byte> b)
    {
        float amax = 0, max = 0;
        foreach (float v in x)
            if (MathF.Abs(v) > amax) { amax = MathF.Abs(v); max = v; }
        float d = max / -8f;
        float dStored = RoundToHalf(d);
        float id = dStored != 0 ? 1f / dStored : 0f;
        BinaryPrimitives.WriteUInt16LittleEndian(b, FloatToHalf(d));
        for (int j = 0; j < QK / 2; j++)
        {
            int q0 = Math.Clamp((int)MathF.Floor(x[j] * id + 8.5f), 0, 15);
            int q1 = Math.Clamp((int)MathF.Floor(x[j + QK / 2] * id + 8.5f), 0, 15);
            b[2 + j] = (byte)(q0 | (q1 << 4));
        }
    }

    /// <summary>
    /// Fits each 32-element sub-block as value = scale * q - min with q in 0..<paramref name="maxLevel"/>
    /// (min = -min(0, smallest)), then quantizes the eight scales and eight mins to 6 bits against
    /// f16 super-block factors d and dmin, and finally picks each q against the scale and min that are
    /// actually stored. Writes d, dmin and the 12 packed scale bytes into the block.
    /// </summary>
    private static void FitScaleMinSuperBlock(ReadOnlySpan<float> x, Span<byte> block, int maxLevel, Span<byte> levels)
    {
        Span<float> subScale = stackalloc float[8];
        Span<float> subMin = stackalloc float[8];
        float maxScale = 0, maxMin = 0;
        for (int j = 0; j < 8; j++)
        {
            var s = x.Slice(32 * j, 32);
            float lo = s[0], hi = s[0];
            foreach (float v in s) { lo = MathF.Min(lo, v); hi = MathF.Max(hi, v); }
            lo = MathF.Min(lo, 0f);
            subScale[j] = (hi - lo) / maxLevel;
            subMin[j] = -lo;
            maxScale = MathF.Max(maxScale, subScale[j]);
            maxMin = MathF.Max(maxMin, subMin[j]);
        }
        float d = RoundToHalf(maxScale / 63f), dmin = RoundToHalf(maxMin / 63f);
        Span<byte> scale6 = stackalloc byte[8];
        Span<byte> min6 = stackalloc byte[8];
        for (int j = 0; j < 8; j++)
        {
            scale6[j] = (byte)(d > 0 ? Math.Clamp(RoundEven(subScale[j] / d), 0, 63) : 0);
            min6[j] = (byte)(dmin > 0 ? Math.Clamp(RoundEven(subMin[j] / dmin), 0, 63) : 0);
            // A non-zero spread rounded down to scale 0 would flatten the sub-block; keep at least one step.
            if (scale6[j] == 0 && subScale[j] > 0 && d > 0) scale6[j] = 1;
        }
        BinaryPrimitives.WriteUInt16LittleEndian(block, FloatToHalf(d));
        BinaryPrimitives.WriteUInt16LittleEndian(block[2..], FloatToHalf(dmin));
        PackScaleMins(scale6, min6, block.Slice(KScalesOffset, 12));
        for (int j = 0; j < 8; j++)
        {
            float step = d * scale6[j], offset = dmin * min6[j];
            float inv = step > 0 ? 1f / step : 0f;
            for (int l = 0; l < 32; l++)
                levels[32 * j + l] = (byte)Math.Clamp(RoundEven((x[32 * j + l] + offset) * inv), 0, maxLevel);
        }
    }

    private static void Q4_K(ReadOnlySpan<float> x, Span<byte> b, Span<byte> levels)
    {
        FitScaleMinSuperBlock(x, b, 15, levels);
        var qs = b.Slice(Q4KQsOffset, 128);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                qs[32 * c + l] = (byte)(levels[64 * c + l] | (levels[64 * c + 32 + l] << 4));
    }

    private static void Q5_K(ReadOnlySpan<float> x, Span<byte> b, Span<byte> levels)
    {
        FitScaleMinSuperBlock(x, b, 31, levels);
        var qh = b.Slice(Q5KQhOffset, 32);
        var qs = b.Slice(Q5KQsOffset, 128);
        qh.Clear();
        for (int c = 0; c < 4; c++)
        {
            for (int l = 0; l < 32; l++)
            {
                int lo = levels[64 * c + l], hi = levels[64 * c + 32 + l];
                qs[32 * c + l] = (byte)((lo & 0xF) | ((hi & 0xF) << 4));
                qh[l] |= (byte)(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
        }
    }

    /// <summary>
    /// Q6_K: sixteen 16-element sub-blocks, each with a signed 8-bit scale of the f16 super-block d;
    /// the sub-block's largest-magnitude element (with sign) maps to level -32, others round into -32..31.
    /// </summary>
    private static void Q6_K(ReadOnlySpan<float> x, Span<byte> b, Span<byte> levels)
    {
        Span<float> subScale = stackalloc float[16];
        float maxAbsScale = 0;
        for (int i = 0; i < 16; i++)
        {
            float amax = 0, max = 0;
            foreach (float v in x.Slice(16 * i, 16))
                if (MathF.Abs(v) > amax) { amax = MathF.Abs(v); max = v; }
            subScale[i] = max / -32f;
            maxAbsScale = MathF.Max(maxAbsScale, MathF.Abs(subScale[i]));
        }
        float d = RoundToHalf(maxAbsScale / 127f);
        var scales = b.Slice(Q6KScalesOffset, 16);
        for (int i = 0; i < 16; i++)
        {
            int sc = d > 0 ? Math.Clamp(RoundEven(subScale[i] / d), -127, 127) : 0;
            scales[i] = (byte)(sbyte)sc;
            float step = d * sc;
            float inv = step != 0 ? 1f / step : 0f;
            for (int l = 0; l < 16; l++)
                levels[16 * i + l] = (byte)(Math.Clamp(RoundEven(x[16 * i + l] * inv), -32, 31) + 32);
        }
        BinaryPrimitives.WriteUInt16LittleEndian(b[Q6KDOffset..], FloatToHalf(d));
        var ql = b[..128];
        var qh = b.Slice(Q6KQhOffset, 64);
        for (int h = 0; h < 2; h++)
        {
            for (int l = 0; l < 32; l++)
            {
                int e = 128 * h + l;
                int q0 = levels[e], q1 = levels[e + 32], q2 = levels[e + 64], q3 = levels[e + 96];
                ql[64 * h + l] = (byte)((q0 & 0xF) | ((q2 & 0xF) << 4));
                ql[64 * h + 32 + l] = (byte)((q1 & 0xF) | ((q3 & 0xF) << 4));
                qh[32 * h + l] = (byte)((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6));
            }
        }
    }

    /// <summary>
    /// Q8_K: d = max|x| / 127 as a float32, q = round(x * (127 / max|x|)), and bsums[i] = sum of q[16i..16i+15].
    /// (The activation quantizer in the CPU backend computes exactly these operations.)
    /// </summary>
    private static void Q8_K(ReadOnlySpan<float> x, Span<byte> b)
    {
        float amax = MaxAbs(x);
        float d = amax / 127f;
        float id = amax != 0 ? 127f / amax : 0f;
        BinaryPrimitives.WriteSingleLittleEndian(b, d);
        for (int i = 0; i < 16; i++)
        {
            int sum = 0;
            for (int l = 0; l < 16; l++)
            {
                int q = Math.Clamp(RoundEven(x[16 * i + l] * id), -127, 127);
                b[Q8KQsOffset + 16 * i + l] = (byte)(sbyte)q;
                sum += q;
            }
            BinaryPrimitives.WriteInt16LittleEndian(b[(Q8KBsumsOffset + 2 * i)..], (short)sum);
        }
    }
}

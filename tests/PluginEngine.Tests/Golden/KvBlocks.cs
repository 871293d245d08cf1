using PluginEngine.Abstractions;
using PluginEngine.Core.Quantization;

namespace PluginEngine.Tests.Golden;

/// <summary>
/// The GGUF Q8_0 and Q4_0 block formulas, written out element by element for the oracles (independent of the CPU backend's
/// quantizer): Q8_0 d = max|x| / 127, q = round(x · (1/d)) half to even; Q4_0 d = m / −8 with m the first element of largest
/// magnitude (its sign kept), q = min(15, (int)(x · (1/d) + 8.5)), element j in the low nibble of byte j, j + 16 in its high nibble.
/// </summary>
internal static class KvBlocks
{
    /// <summary>Blocks of <paramref name="type"/> holding <paramref name="x"/> (a whole number of 32-element blocks).</summary>
    public static byte[] Quantize(GgmlType type, float[] x)
    {
        var info = GgmlTypes.Get(type);
        var bytes = new byte[info.RowSize(x.Length)];
        for (int b = 0; b < x.Length / 32; b++)
        {
            var block = x.AsSpan(32 * b, 32);
            var dst = bytes.AsSpan(b * info.BytesPerBlock, info.BytesPerBlock);
            if (type == GgmlType.Q8_0)
            {
                float amax = 0;
                foreach (float v in block) amax = MathF.Max(amax, MathF.Abs(v));
                float d = amax / 127f, id = d != 0 ? 1f / d : 0f;
                BitConverter.TryWriteBytes(dst, BitConverter.HalfToUInt16Bits((Half)d));
                for (int i = 0; i < 32; i++) dst[2 + i] = (byte)(sbyte)Math.Clamp((int)MathF.Round(block[i] * id, MidpointRounding.ToEven), -127, 127);
            }
            else if (type == GgmlType.Q4_0)
            {
                float amax = 0, max = 0;
                foreach (float v in block)
                    if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
                float d = max / -8f, id = d != 0 ? 1f / d : 0f;
                BitConverter.TryWriteBytes(dst, BitConverter.HalfToUInt16Bits((Half)d));
                for (int j = 0; j < 16; j++)
                {
                    int q0 = Math.Min(15, (int)(block[j] * id + 8.5f)), q1 = Math.Min(15, (int)(block[j + 16] * id + 8.5f));
                    dst[2 + j] = (byte)(q0 | (q1 << 4));
                }
            }
            else throw new ArgumentOutOfRangeException(nameof(type), type, "Q8_0 or Q4_0");
        }
        return bytes;
    }

    /// <summary>What a cache of <paramref name="type"/> gives back for <paramref name="x"/>: its blocks, decoded.</summary>
    public static float[] RoundTrip(GgmlType type, float[] x)
    {
        var y = new float[x.Length];
        Dequantizer.Dequantize(type, Quantize(type, x), y);
        return y;
    }
}

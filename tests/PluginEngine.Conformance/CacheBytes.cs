using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Core.Quantization;
using Xunit;

namespace PluginEngine.Conformance;

/// <summary>
/// KV-cache contents (F32, F16, or the Q8_0 and Q4_0 blocks of a quantized cache) as bytes, for the cases that fill caches and
/// read them back, and the check that cache bytes hold given values.
/// </summary>
internal static class CacheBytes
{
    /// <summary>The KV cache types the kit checks: F32, F16 and the quantized Q8_0 and Q4_0 (docs/batching.md#quantized-kv-cache).</summary>
    public static readonly GgmlType[] Types = [GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0];

    /// <summary>True for the block-quantized cache types.</summary>
    public static bool IsQuantized(GgmlType type) => GgmlTypes.Get(type).IsQuantized;

    /// <summary>A tensor of <paramref name="type"/> on <paramref name="s"/>'s device holding <paramref name="bytes"/>.</summary>
    public static DeviceTensor Upload(DeviceSession s, GgmlType type, byte[] bytes)
    {
        var info = GgmlTypes.Get(type);
        var t = s.Zeros(bytes.Length / info.BytesPerBlock * info.BlockSize, type);
        t.Buffer.Upload(t.Offset, bytes);
        return t;
    }

    /// <summary>Cache bytes holding <paramref name="values"/>: Q8_0 and Q4_0 through the core's reference quantizer.</summary>
    public static byte[] Encode(GgmlType type, float[] values)
    {
        switch (type)
        {
            case GgmlType.F32: return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
            case GgmlType.F16: return MemoryMarshal.AsBytes(values.Select(f => (Half)f).ToArray().AsSpan()).ToArray();
            case GgmlType.Q8_0 or GgmlType.Q4_0:
                var bytes = new byte[GgmlTypes.RowSize(type, values.Length)];
                Quantizer.Quantize(type, values, bytes);
                return bytes;
            default: throw new NotSupportedException($"cache type {type}");
        }
    }

    public static float[] Decode(GgmlType type, ReadOnlySpan<byte> bytes)
    {
        switch (type)
        {
            case GgmlType.F32: return MemoryMarshal.Cast<byte, float>(bytes).ToArray();
            case GgmlType.F16: return MemoryMarshal.Cast<byte, Half>(bytes).ToArray().Select(h => (float)h).ToArray();
            case GgmlType.Q8_0 or GgmlType.Q4_0:
                var info = GgmlTypes.Get(type);
                var values = new float[bytes.Length / info.BytesPerBlock * info.BlockSize];
                Dequantizer.Dequantize(type, bytes, values);
                return values;
            default: throw new NotSupportedException($"cache type {type}");
        }
    }

    /// <summary>
    /// Asserts that cache <paramref name="bytes"/> of <paramref name="type"/> hold <paramref name="values"/>. F32 and F16: within
    /// <paramref name="floatTolerance"/> × rms (<see cref="TestData.AssertClose(ReadOnlySpan{float}, ReadOnlySpan{float}, double, string)"/>).
    /// Q8_0 and Q4_0: every element within one quantization step of its 32-element block (its largest |value| / 127, or / 8), plus
    /// 1e-3 × rms: the rounding a quantized cache makes, or a neighbouring level where the backend's value (rotated or projected
    /// with its own rounding) fell on the other side of a level's edge. A wrong layout or nibble order is off by many steps.
    /// </summary>
    public static void AssertHolds(GgmlType type, ReadOnlySpan<float> values, ReadOnlySpan<byte> bytes, double floatTolerance, string what)
    {
        float[] decoded = Decode(type, bytes);
        if (!IsQuantized(type))
        {
            TestData.AssertClose(values, decoded, floatTolerance, what);
            return;
        }
        Assert.Equal(values.Length, decoded.Length);
        double sumSq = 0;
        foreach (float v in values) sumSq += (double)v * v;
        double slack = 1e-3 * Math.Max(Math.Sqrt(sumSq / Math.Max(1, values.Length)), 1e-3);
        double levels = type == GgmlType.Q8_0 ? 127 : 8;
        for (int b = 0; b < values.Length / 32; b++)
        {
            double amax = 0;
            for (int i = 32 * b; i < 32 * b + 32; i++) amax = Math.Max(amax, Math.Abs(values[i]));
            double bound = amax / levels * 1.01 + slack;
            for (int i = 32 * b; i < 32 * b + 32; i++)
            {
                if (!float.IsFinite(decoded[i])) Assert.Fail($"{what}: element {i} is {decoded[i]} (expected {values[i]})");
                double error = Math.Abs(values[i] - decoded[i]);
                if (error > bound)
                    Assert.Fail($"{what}: element {i} holds {decoded[i]}, expected {values[i]} within one {type} step of its block ({bound:G3}); off by {error / (amax / levels):F1} steps");
            }
        }
    }
}

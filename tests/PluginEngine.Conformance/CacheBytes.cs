using System.Runtime.InteropServices;
using PluginEngine.Abstractions;

namespace PluginEngine.Conformance;

/// <summary>KV-cache contents (F32 or F16) as bytes, for the fused and segment op cases that fill caches and read them back.</summary>
internal static class CacheBytes
{
    /// <summary>A tensor of <paramref name="type"/> on <paramref name="s"/>'s device holding <paramref name="bytes"/>.</summary>
    public static DeviceTensor Upload(DeviceSession s, GgmlType type, byte[] bytes)
    {
        var t = s.Zeros(bytes.Length / GgmlTypes.RowSize(type, 1), type);
        t.Buffer.Upload(t.Offset, bytes);
        return t;
    }

    public static byte[] Encode(GgmlType type, float[] values) => type switch
    {
        GgmlType.F32 => MemoryMarshal.AsBytes(values.AsSpan()).ToArray(),
        GgmlType.F16 => MemoryMarshal.AsBytes(values.Select(f => (Half)f).ToArray().AsSpan()).ToArray(),
        _ => throw new NotSupportedException($"cache type {type}"),
    };

    public static float[] Decode(GgmlType type, ReadOnlySpan<byte> bytes) => type switch
    {
        GgmlType.F32 => MemoryMarshal.Cast<byte, float>(bytes).ToArray(),
        GgmlType.F16 => MemoryMarshal.Cast<byte, Half>(bytes).ToArray().Select(h => (float)h).ToArray(),
        _ => throw new NotSupportedException($"cache type {type}"),
    };
}

using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The K-quant generation kernels compute exact integer sums per super-block and then the canonical float steps (QuantDot.KQuants.cs),
/// so at every level they must give the scalar kernel's bits, whatever the bytes: here weight super-blocks of random bytes (every
/// 6-bit scale and min, every quant value, the top bits of Q6_K included) against Q8_K activations with quants over the whole int8
/// range (−128 included, the edge of vpmaddubsw's 16-bit pair sums). Checked through the single-row dot and the four-row
/// (generation) kernel, for odd row counts, at AVX2 and AVX-512.
/// </summary>
public unsafe class KQuantExactnessTests
{
    private const int Q8KBytes = 292;

    public static TheoryData<GgmlType, KernelIsa> Cases()
    {
        var data = new TheoryData<GgmlType, KernelIsa>();
        foreach (var t in new[] { GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K })
            foreach (var isa in new[] { KernelIsa.Avx2, KernelIsa.Avx512 }) data.Add(t, isa);
        return data;
    }

    /// <summary>Random bytes for every super-block, with the f16 scales replaced by small finite values.</summary>
    private static byte[] RandomWeights(GgmlType type, long rows, long cols, Random rng)
    {
        long rowBytes = GgmlTypes.RowSize(type, cols), blockBytes = rowBytes / (cols / 256);
        var w = new byte[rows * rowBytes];
        rng.NextBytes(w);
        for (long b = 0; b < w.Length; b += blockBytes)
        {
            if (type == GgmlType.Q6_K) WriteHalf(w, b + 208, 0.01f + 0.02f * rng.NextSingle());
            else
            {
                WriteHalf(w, b, 0.01f + 0.02f * rng.NextSingle());
                WriteHalf(w, b + 2, 0.01f + 0.02f * rng.NextSingle());
            }
        }
        return w;
    }

    private static void WriteHalf(byte[] w, long at, float v) => BitConverter.TryWriteBytes(w.AsSpan((int)at, 2), (Half)v);

    /// <summary>A Q8_K row (f32 scale, 256 int8 quants, 16 int16 sums of 16) with quants over −128..127, the extremes often.</summary>
    private static byte[] RandomActivation(long cols, Random rng)
    {
        var a = new byte[cols / 256 * Q8KBytes];
        for (long b = 0; b < cols / 256; b++)
        {
            int at = (int)(b * Q8KBytes);
            BitConverter.TryWriteBytes(a.AsSpan(at, 4), 0.5f + rng.NextSingle());
            for (int j = 0; j < 16; j++)
            {
                short sum = 0;
                for (int i = 0; i < 16; i++)
                {
                    int pick = rng.Next(8);
                    sbyte q = pick == 0 ? sbyte.MinValue : pick == 1 ? sbyte.MaxValue : (sbyte)rng.Next(-128, 128);
                    a[at + 4 + 16 * j + i] = (byte)q;
                    sum += q;
                }
                BitConverter.TryWriteBytes(a.AsSpan(at + 260 + 2 * j, 2), sum);
            }
        }
        return a;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void K_quant_kernels_give_the_scalar_bits_for_any_bytes(GgmlType type, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        var rng = new Random(17 + (int)type * 3 + (int)isa);
        foreach (long cols in new long[] { 256, 768, 2048 })
        foreach (long rows in new long[] { 1, 3, 4, 5, 7, 9, 13 })
        {
            long rowBytes = GgmlTypes.RowSize(type, cols);
            byte[] w = RandomWeights(type, rows, cols, rng);
            byte[] act = RandomActivation(cols, rng);
            using var wBuf = new GuardedBuffer(w.Length);
            using var aBuf = new GuardedBuffer(act.Length);
            w.CopyTo(wBuf.Span);
            act.CopyTo(aBuf.Span);
            for (long r = 0; r < rows; r++)
            {
                float expected = QuantDot.Dot(type, wBuf.Pointer + r * rowBytes, aBuf.Pointer, cols, KernelIsa.Scalar);
                float actual = QuantDot.Dot(type, wBuf.Pointer + r * rowBytes, aBuf.Pointer, cols, isa);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(actual),
                    $"{type}/{isa} cols {cols} row {r}: dot {actual}, scalar {expected}");
            }
            var multiRow = QuantDot.ResolveMultiRow(type, isa);
            Assert.True(multiRow != null, $"{type} has a four-row kernel at {isa}");
            for (long r0 = 0; r0 + QuantDot.MultiRowWidth <= rows; r0 += QuantDot.MultiRowWidth)
            {
                var y = new float[QuantDot.MultiRowWidth];
                fixed (float* py = y) multiRow(wBuf.Pointer + r0 * rowBytes, rowBytes, aBuf.Pointer, cols, py);
                for (int i = 0; i < y.Length; i++)
                {
                    float expected = QuantDot.Dot(type, wBuf.Pointer + (r0 + i) * rowBytes, aBuf.Pointer, cols, KernelIsa.Scalar);
                    Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[i]),
                        $"{type}/{isa} cols {cols} rows {r0}+{i}: four-row kernel {y[i]}, scalar {expected}");
                }
            }
        }
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;
using PluginEngine.Tests.Golden;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The KV cache's quantizer (the CPU queue's Convert to Q8_0 and Q4_0; docs/batching.md#quantized-kv-cache): every
/// instruction-set level writes the same bytes, the blocks are the GGUF formulas written out independently here, the values
/// round-trip within one quantization step, and a row's bytes do not depend on the rows beside it (batch invariance).
/// ggml itself is the oracle in <see cref="GgmlCompatibilityTests"/>.
/// </summary>
public unsafe class CacheQuantizerTests
{
    public static TheoryData<GgmlType, KernelIsa> TypesAndIsas()
    {
        var data = new TheoryData<GgmlType, KernelIsa>();
        foreach (var type in new[] { GgmlType.Q8_0, GgmlType.Q4_0 })
            foreach (var isa in TestData.Isas) data.Add(type, isa);
        return data;
    }

    /// <summary>Gaussian blocks, plus blocks that stress the scale choice: all zeros, a tie in magnitude of opposite signs (the
    /// first wins), a negative largest value, values that land exactly on Q4_0's +8.5 edge, subnormal-sized values.</summary>
    private static float[] Input()
    {
        var x = TestData.Gaussian(seed: 90, 32 * 40, scale: 1.7f).ToList();
        x.AddRange(new float[32]);                                                               // zeros
        x.AddRange(Enumerable.Range(0, 32).Select(i => i == 3 ? -2.5f : i == 20 ? 2.5f : 0.01f * i)); // ±2.5: -2.5 comes first
        x.AddRange(Enumerable.Range(0, 32).Select(i => i == 9 ? 2.5f : i == 1 ? -2.5f : -0.02f * i)); // -2.5 first again, at index 1
        x.AddRange(Enumerable.Range(0, 32).Select(i => -3f + i * 0.1875f));                      // exact multiples of d = 3/8
        x.AddRange(Enumerable.Range(0, 32).Select(i => (i - 16) * 1e-10f));                     // tiny: d underflows f16 to 0
        return [.. x];
    }

    private static byte[] Quantize(GgmlType type, float[] x, KernelIsa isa)
    {
        var bytes = new byte[GgmlTypes.RowSize(type, x.Length)];
        fixed (float* px = x)
        fixed (byte* pb = bytes)
            CacheQuantizer.Quantize(type, px, pb, x.Length, isa);
        return bytes;
    }

    [Theory]
    [MemberData(nameof(TypesAndIsas))]
    public void Every_level_writes_the_blocks_of_the_gguf_formulas(GgmlType type, KernelIsa isa)
    {
        TestData.SkipUnlessSupported(isa);
        float[] x = Input();
        Assert.Equal(KvBlocks.Quantize(type, x), Quantize(type, x, isa));
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void Values_round_trip_within_one_step_of_their_block(GgmlType type)
    {
        float[] x = TestData.Gaussian(seed: 91, 32 * 64, scale: 0.9f);
        byte[] bytes = Quantize(type, x, KernelIsaSupport.Best);
        float[] y = TestData.Dequantize(type, bytes, x.Length);
        int blockBytes = GgmlTypes.Get(type).BytesPerBlock;
        for (int b = 0; b < x.Length / 32; b++)
        {
            float amax = x.Skip(32 * b).Take(32).Max(MathF.Abs);
            // Q8_0: rounding to the nearest of 255 levels, half a step, plus the f16 rounding of d (2⁻¹¹ relative) times up to
            // 127 levels; Q4_0: d = amax/8, the largest positive values clamp to level 15 (a whole step), plus 8 × d's rounding.
            double bound = type == GgmlType.Q8_0 ? amax / 127.0 * (0.5 + 127.0 / 2048) : amax / 8.0 * (1 + 8.0 / 2048);
            for (int i = 32 * b; i < 32 * b + 32; i++)
                Assert.True(Math.Abs(x[i] - y[i]) <= bound, $"{type} block {b} element {i}: {x[i]} came back as {y[i]} (bound {bound})");
            Assert.Equal(BitConverter.HalfToUInt16Bits((Half)(type == GgmlType.Q8_0 ? amax / 127f : SignedMax(x.AsSpan(32 * b, 32)) / -8f)),
                         BitConverter.ToUInt16(bytes, b * blockBytes));
        }
    }

    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void A_rows_blocks_do_not_depend_on_the_rows_beside_it(GgmlType type)
    {
        // Three 256-element rows quantized in one call, and the middle one alone: the same bytes (a token's cache row is the
        // same whatever else is in its batch).
        float[] rows = TestData.Gaussian(seed: 92, 3 * 256);
        long rowBytes = GgmlTypes.RowSize(type, 256);
        byte[] together = Quantize(type, rows, KernelIsaSupport.Best);
        byte[] alone = Quantize(type, rows[256..512], KernelIsaSupport.Best);
        Assert.Equal(alone, together.AsSpan((int)rowBytes, (int)rowBytes).ToArray());
    }

    [Fact]
    public void A_count_that_is_not_whole_blocks_is_refused()
    {
        var e = Assert.Throws<ArgumentException>(() => Quantize(GgmlType.Q4_0, new float[40], KernelIsa.Scalar));
        Assert.Contains("blocks of 32", e.Message);
    }

    private static float SignedMax(ReadOnlySpan<float> block)
    {
        float amax = 0, max = 0;
        foreach (float v in block)
            if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
        return max;
    }
}

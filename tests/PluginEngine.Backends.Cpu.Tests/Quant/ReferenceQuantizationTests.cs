using System.Buffers.Binary;
using PluginEngine.Abstractions;
using PluginEngine.Core.Quantization;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>The scalar reference quantizer/dequantizer in PluginEngine.Core: round-trip error bounds and block-format known answers.</summary>
public class ReferenceQuantizationTests
{
    public static TheoryData<GgmlType> AllReferenceTypes() => new(TestData.ReferenceTypes);

    /// <summary>
    /// Quantize → dequantize stays within each type's error bound:
    /// F32 exact; F16 half an ulp (2^-11 relative, 2^-25 absolute in the subnormal range); BF16 2^-8 relative;
    /// Q8_0 half a step d = max|x|/127 per block plus the f16 rounding of d (2^-11 relative) at |q| ≤ 127;
    /// Q8_K half a step (f32 d); Q4_0 one full step d = max|x|/8 (the value opposite the extreme clamps from +8 to +7);
    /// K-quants (fitted, not exact) an RMS error relative to the row's RMS: measured 0.088 / 0.041 / 0.021 for
    /// Q4_K / Q5_K / Q6_K on this data (what a min/max fit of 15 / 31 / 63 levels gives for Gaussians), bounds ~30 % above.
    /// </summary>
    [Theory]
    [MemberData(nameof(AllReferenceTypes))]
    public void A_round_trip_stays_within_the_types_bound(GgmlType type)
    {
        const int n = 4096;
        float[] x = TestData.Gaussian(seed: 11 + (int)type, n);
        float[] y = TestData.Dequantize(type, TestData.Quantize(type, x), n);
        int block = GgmlTypes.Get(type).BlockSize;
        double errSq = 0, xSq = 0;
        for (int b = 0; b < n / block; b++)
        {
            float amax = 0;
            for (int i = 0; i < block; i++) amax = MathF.Max(amax, MathF.Abs(x[b * block + i]));
            for (int i = b * block; i < (b + 1) * block; i++)
            {
                double err = Math.Abs((double)y[i] - x[i]);
                errSq += err * err;
                xSq += (double)x[i] * x[i];
                double bound = type switch
                {
                    GgmlType.F32 => 0,
                    GgmlType.F16 => Math.Max(Math.Abs(x[i]) * Math.Pow(2, -11), Math.Pow(2, -25)),
                    GgmlType.BF16 => Math.Abs(x[i]) * Math.Pow(2, -8),
                    GgmlType.Q8_0 => amax / 127.0 * (0.5 + 127 * Math.Pow(2, -11)) * 1.0001,
                    GgmlType.Q8_K => amax / 127.0 * 0.5 * 1.0001,
                    GgmlType.Q4_0 => amax / 8.0 * (1 + Math.Pow(2, -10)),
                    _ => double.PositiveInfinity, // K-quants: checked as RMS below
                };
                Assert.True(err <= bound, $"{type} element {i}: x={x[i]}, decoded {y[i]}, error {err} > bound {bound}");
            }
        }
        double relRms = Math.Sqrt(errSq / xSq);
        double rmsBound = type switch { GgmlType.Q4_K => 0.11, GgmlType.Q5_K => 0.053, GgmlType.Q6_K => 0.027, _ => 1 };
        Assert.True(relRms <= rmsBound, $"{type}: relative RMS error {relRms:F4} > {rmsBound}");
    }

    [Fact]
    public void K_quants_round_trip_beats_the_next_coarser_type()
    {
        // Sanity on the fitted scales: more bits must give a smaller error.
        float[] x = TestData.Gaussian(seed: 5, 2048);
        double Rms(GgmlType t)
        {
            float[] y = TestData.Dequantize(t, TestData.Quantize(t, x), x.Length);
            return Math.Sqrt(x.Select((v, i) => (double)(v - y[i]) * (v - y[i])).Sum() / x.Length);
        }
        Assert.True(Rms(GgmlType.Q6_K) < Rms(GgmlType.Q5_K));
        Assert.True(Rms(GgmlType.Q5_K) < Rms(GgmlType.Q4_K));
    }

    [Fact]
    public void Zero_rows_encode_to_zero_scales_and_decode_to_zero()
    {
        foreach (var type in TestData.ReferenceTypes)
        {
            var x = new float[GgmlTypes.Get(type).BlockSize * 2];
            var bytes = TestData.Quantize(type, x);
            var y = TestData.Dequantize(type, bytes, x.Length);
            Assert.All(y, v => Assert.Equal(0f, v));
        }
    }

    [Fact]
    public void Q4_0_known_answer()
    {
        // d = 0.5 (f16 0x3800); qs[j] = j | (15 - j) << 4: element j = 0.5 (j - 8), element 16 + j = 0.5 (7 - j).
        var block = new byte[18];
        BinaryPrimitives.WriteUInt16LittleEndian(block, 0x3800);
        for (int j = 0; j < 16; j++) block[2 + j] = (byte)(j | ((15 - j) << 4));
        var y = TestData.Dequantize(GgmlType.Q4_0, block, 32);
        for (int j = 0; j < 16; j++)
        {
            Assert.Equal(0.5f * (j - 8), y[j]);
            Assert.Equal(0.5f * (7 - j), y[16 + j]);
        }
        // And the quantizer reproduces exactly this block from those values (max magnitude -4 maps to level 0).
        Assert.Equal(block, TestData.Quantize(GgmlType.Q4_0, y));
    }

    [Fact]
    public void Q8_0_known_answer()
    {
        var block = new byte[34];
        BinaryPrimitives.WriteUInt16LittleEndian(block, 0x3400); // 0.25
        for (int i = 0; i < 32; i++) block[2 + i] = (byte)(sbyte)(i - 16);
        var y = TestData.Dequantize(GgmlType.Q8_0, block, 32);
        for (int i = 0; i < 32; i++) Assert.Equal(0.25f * (i - 16), y[i]);
    }

    [Fact]
    public void Float_types_known_answers()
    {
        // F32 is stored verbatim, little-endian: 0x3FC00000 = 1.5.
        Assert.Equal(new byte[] { 0x00, 0x00, 0xC0, 0x3F }, TestData.Quantize(GgmlType.F32, [1.5f]));
        Assert.Equal(new[] { -2.5f }, TestData.Dequantize(GgmlType.F32, [0x00, 0x00, 0x20, 0xC0], 1));

        ushort[] halfBits = [0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00];
        float[] halfValues = [1f, -2f, 65504f, MathF.Pow(2, -24), float.PositiveInfinity];
        var bytes = new byte[halfBits.Length * 2];
        for (int i = 0; i < halfBits.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(2 * i), halfBits[i]);
        Assert.Equal(halfValues, TestData.Dequantize(GgmlType.F16, bytes, halfBits.Length));
        Assert.Equal(bytes, TestData.Quantize(GgmlType.F16, halfValues));

        // bfloat16 is the top half of a float32: 0x3F80 = 1, 0xC040 = -3. Ties round to even:
        // 1 + 2^-8 lies halfway between 0x3F80 and 0x3F81 (goes down), 1 + 3·2^-8 halfway between 0x3F81 and 0x3F82 (goes up).
        var bf = new byte[] { 0x80, 0x3F, 0x40, 0xC0 };
        Assert.Equal(new[] { 1f, -3f }, TestData.Dequantize(GgmlType.BF16, bf, 2));
        Assert.Equal(new byte[] { 0x80, 0x3F }, TestData.Quantize(GgmlType.BF16, [1f + MathF.Pow(2, -8)]));
        Assert.Equal(new byte[] { 0x82, 0x3F }, TestData.Quantize(GgmlType.BF16, [1f + 3 * MathF.Pow(2, -8)]));
    }

    /// <summary>Scales 1,2,3,4,17,17,17,17 and mins 5,6,7,8,33,33,33,33 packed as GGUF does (hand-computed bytes).</summary>
    private static readonly byte[] KScales = [0x41, 0x42, 0x43, 0x44, 0x85, 0x86, 0x87, 0x88, 0x11, 0x11, 0x11, 0x11];
    private static readonly int[] KSc = [1, 2, 3, 4, 17, 17, 17, 17];
    private static readonly int[] KMin = [5, 6, 7, 8, 33, 33, 33, 33];

    [Fact]
    public void K_scale_packing_matches_hand_computed_bytes()
    {
        var packed = new byte[12];
        BlockLayouts.PackScaleMins(KSc.Select(v => (byte)v).ToArray(), KMin.Select(v => (byte)v).ToArray(), packed);
        Assert.Equal(KScales, packed);
        for (int j = 0; j < 8; j++)
        {
            BlockLayouts.UnpackScaleMin(KScales, j, out int s, out int m);
            Assert.Equal((KSc[j], KMin[j]), (s, m));
        }
    }

    [Fact]
    public void Q4_K_known_answer()
    {
        // d = 1, dmin = 0.5; every qs byte 0x3A: even sub-blocks (low nibbles) hold 10, odd ones (high nibbles) 3.
        var block = new byte[144];
        BinaryPrimitives.WriteUInt16LittleEndian(block, 0x3C00);
        BinaryPrimitives.WriteUInt16LittleEndian(block.AsSpan(2), 0x3800);
        KScales.CopyTo(block, 4);
        block.AsSpan(16).Fill(0x3A);
        var y = TestData.Dequantize(GgmlType.Q4_K, block, 256);
        float[] expected = [7.5f, 3f, 26.5f, 8f, 153.5f, 34.5f, 153.5f, 34.5f]; // sc·q − 0.5·min per sub-block
        for (int i = 0; i < 256; i++) Assert.Equal(expected[i / 32], y[i]);
    }

    [Fact]
    public void Q5_K_known_answer()
    {
        // As Q4_K, plus qh bytes 0x55: bits 0,2,4,6 set = fifth bit (16) on every even sub-block only.
        var block = new byte[176];
        BinaryPrimitives.WriteUInt16LittleEndian(block, 0x3C00);
        BinaryPrimitives.WriteUInt16LittleEndian(block.AsSpan(2), 0x3800);
        KScales.CopyTo(block, 4);
        block.AsSpan(16, 32).Fill(0x55);
        block.AsSpan(48).Fill(0x3A);
        var y = TestData.Dequantize(GgmlType.Q5_K, block, 256);
        float[] expected = [23.5f, 3f, 74.5f, 8f, 425.5f, 34.5f, 425.5f, 34.5f];
        for (int i = 0; i < 256; i++) Assert.Equal(expected[i / 32], y[i]);
    }

    [Fact]
    public void Q6_K_known_answer()
    {
        // ql bytes 0x21 (low 1, high 2), qh bytes 0xE4 (2-bit fields 0,1,2,3), scales i − 8, d = 0.5.
        // Per 128-element half: elements 0..31 = 1|0<<4 = 1, 32..63 = 1|1<<4 = 17, 64..95 = 2|2<<4 = 34, 96..127 = 2|3<<4 = 50; minus 32.
        var block = new byte[210];
        block.AsSpan(0, 128).Fill(0x21);
        block.AsSpan(128, 64).Fill(0xE4);
        for (int i = 0; i < 16; i++) block[192 + i] = (byte)(sbyte)(i - 8);
        BinaryPrimitives.WriteUInt16LittleEndian(block.AsSpan(208), 0x3800);
        var y = TestData.Dequantize(GgmlType.Q6_K, block, 256);
        int[] level = [1 - 32, 17 - 32, 34 - 32, 50 - 32];
        for (int e = 0; e < 256; e++) Assert.Equal(0.5f * (e / 16 - 8) * level[e % 128 / 32], y[e]);
    }

    [Fact]
    public void Q8_K_known_answer_and_block_sums()
    {
        var block = new byte[292];
        BinaryPrimitives.WriteSingleLittleEndian(block, 0.125f);
        for (int i = 0; i < 256; i++) block[4 + i] = (byte)(sbyte)(i - 128);
        var y = TestData.Dequantize(GgmlType.Q8_K, block, 256);
        for (int i = 0; i < 256; i++) Assert.Equal(0.125f * (i - 128), y[i]);

        // Quantizing those values back gives d = 128/127 · 0.125 and sums of 16 that match the quants.
        var q = TestData.Quantize(GgmlType.Q8_K, y);
        for (int g = 0; g < 16; g++)
        {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += (sbyte)q[4 + 16 * g + l];
            Assert.Equal(sum, BinaryPrimitives.ReadInt16LittleEndian(q.AsSpan(260 + 2 * g)));
        }
        Assert.Equal(16f / 127f, BinaryPrimitives.ReadSingleLittleEndian(q));
    }

    [Fact]
    public void Bad_lengths_and_types_are_rejected_with_clear_messages()
    {
        var ex = Assert.Throws<ArgumentException>(() => Quantizer.Quantize(GgmlType.Q4_0, new float[33], new byte[36]));
        Assert.Contains("Q4_0", ex.Message);
        Assert.Contains("33", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => Dequantizer.Dequantize(GgmlType.Q6_K, new byte[209], new float[256]));
        Assert.Contains("210", ex.Message);
        var nse = Assert.Throws<NotSupportedException>(() => Quantizer.Quantize(GgmlType.Q2_K, new float[256], new byte[84]));
        Assert.Contains("Q2_K", nse.Message);
    }
}

using PluginEngine.Backends.Cpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>F16 ↔ F32 conversions must equal .NET's own (Half) casts bit for bit (exact, round to nearest even).</summary>
public unsafe class Float16ConversionTests
{
    [Fact]
    public void Every_half_converts_to_the_exact_single()
    {
        var halves = new Half[65536 + 3]; // odd length: the vector loops and the scalar tail both run
        for (int i = 0; i < halves.Length; i++) halves[i] = BitConverter.UInt16BitsToHalf((ushort)i);
        var singles = new float[halves.Length];
        fixed (Half* ph = halves) fixed (float* ps = singles) Float16Conversion.ToSingle(ph, ps, halves.Length);
        for (int i = 0; i < halves.Length; i++)
        {
            float expected = (float)halves[i];
            if (float.IsNaN(expected)) Assert.True(float.IsNaN(singles[i]), $"half 0x{i & 0xFFFF:X4} should be NaN");
            else if (BitConverter.SingleToUInt32Bits(expected) != BitConverter.SingleToUInt32Bits(singles[i]))
                Assert.Fail($"half 0x{i & 0xFFFF:X4}: expected {expected:R}, got {singles[i]:R}");
        }
    }

    [Fact]
    public void Singles_round_to_nearest_even_half_including_ties_subnormals_and_overflow()
    {
        var inputs = new List<float>
        {
            0f, -0f, 1f, -1f, 65504f, 65519.99f, 65520f, 65536f, 1e10f, -1e10f, float.PositiveInfinity, float.NegativeInfinity,
            float.NaN, 5.96e-8f, 2.98e-8f, 2.9802322e-8f, 1e-9f, -1e-9f, 6.1035156e-5f, 6.1e-5f, float.Epsilon, float.MaxValue,
        };
        // Every tie between two adjacent positive halves (exactly representable as a single), and a hair either side.
        for (int bits = 0; bits < 0x7C00; bits++)
        {
            double low = (double)BitConverter.UInt16BitsToHalf((ushort)bits);
            double high = (double)BitConverter.UInt16BitsToHalf((ushort)(bits + 1));
            float mid = (float)((low + high) / 2);
            inputs.Add(mid);
            inputs.Add(-mid);
            inputs.Add(BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(mid) + 1));
            inputs.Add(BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(mid) - 1));
        }
        var random = new Random(42);
        for (int i = 0; i < 20000; i++) inputs.Add(BitConverter.UInt32BitsToSingle((uint)random.NextInt64(0, 1L << 32)));

        var source = inputs.ToArray();
        var halves = new Half[source.Length];
        fixed (float* ps = source) fixed (Half* ph = halves) Float16Conversion.ToHalf(ps, ph, source.Length);
        for (int i = 0; i < source.Length; i++)
        {
            Half expected = (Half)source[i];
            if (Half.IsNaN(expected)) Assert.True(Half.IsNaN(halves[i]), $"{source[i]:R} should become NaN");
            else if (BitConverter.HalfToUInt16Bits(expected) != BitConverter.HalfToUInt16Bits(halves[i]))
                Assert.Fail($"single {source[i]:R} (0x{BitConverter.SingleToUInt32Bits(source[i]):X8}): expected half 0x{BitConverter.HalfToUInt16Bits(expected):X4}, got 0x{BitConverter.HalfToUInt16Bits(halves[i]):X4}");
        }
    }

    [Theory, MemberData(nameof(TestData.OddLengths), MemberType = typeof(TestData))]
    public void Round_trip_of_odd_lengths_equals_half_rounding(int n)
    {
        var x = TestData.Uniform(n, 21, -300, 300);
        var halves = new Half[n];
        var back = new float[n];
        fixed (float* px = x, pb = back) fixed (Half* ph = halves)
        {
            Float16Conversion.ToHalf(px, ph, n);
            Float16Conversion.ToSingle(ph, pb, n);
        }
        for (int i = 0; i < n; i++) Assert.Equal((float)(Half)x[i], back[i]);
    }
}

using System.Runtime.InteropServices;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// Block formats checked against llama.cpp itself: ggml's reference dequantizers and quantizers, loaded from
/// LLamaSharp.Backend.Cpu's no-AVX libggml-base.so. What we write must decode identically in ggml, and what
/// ggml writes must decode identically here (bit for bit: both sides perform the same float operations).
/// </summary>
public unsafe class GgmlCompatibilityTests
{
    private static readonly Lazy<(nint Handle, string? Why)> Library = new(Load);

    private static (nint, string?) Load()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return (0, "the ggml oracle library in the test output is the linux-x64 build");
        string path = Path.Combine(AppContext.BaseDirectory, "ggml", "libggml-base.so");
        if (!File.Exists(path)) return (0, $"{path} was not copied (LLamaSharp.Backend.Cpu package not restored)");
        return NativeLibrary.TryLoad(path, out nint handle) ? (handle, null) : (0, $"{path} could not be loaded (missing libgomp/libstdc++?)");
    }

    private static nint Symbol(string name)
    {
        var (handle, why) = Library.Value;
        if (handle == 0) Assert.Skip($"ggml oracle unavailable: {why}");
        return NativeLibrary.GetExport(handle, name);
    }

    private static string Suffix(GgmlType t) => t switch
    {
        GgmlType.Q4_0 => "q4_0", GgmlType.Q8_0 => "q8_0", GgmlType.Q4_K => "q4_K",
        GgmlType.Q5_K => "q5_K", GgmlType.Q6_K => "q6_K", GgmlType.Q8_K => "q8_K",
        _ => throw new ArgumentOutOfRangeException(nameof(t)),
    };

    private static float[] GgmlDequantize(GgmlType type, byte[] bytes, int n)
    {
        var y = new float[n];
        fixed (byte* px = bytes)
        fixed (float* py = y)
        {
            switch (type)
            {
                case GgmlType.F16: ((delegate* unmanaged<byte*, float*, long, void>)Symbol("ggml_fp16_to_fp32_row"))(px, py, n); break;
                case GgmlType.BF16: ((delegate* unmanaged<byte*, float*, long, void>)Symbol("ggml_bf16_to_fp32_row"))(px, py, n); break;
                default: ((delegate* unmanaged<byte*, float*, long, void>)Symbol("dequantize_row_" + Suffix(type)))(px, py, n); break;
            }
        }
        return y;
    }

    private static byte[] GgmlQuantize(GgmlType type, float[] x)
    {
        var bytes = new byte[GgmlTypes.RowSize(type, x.Length)];
        fixed (float* px = x)
        fixed (byte* py = bytes)
        {
            if (type == GgmlType.BF16) ((delegate* unmanaged<float*, byte*, long, void>)Symbol("ggml_fp32_to_bf16_row_ref"))(px, py, x.Length);
            else ((delegate* unmanaged<float*, byte*, long, void>)Symbol("quantize_row_" + Suffix(type) + "_ref"))(px, py, x.Length);
        }
        return bytes;
    }

    public static TheoryData<GgmlType> QuantTypes() => new(GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K, GgmlType.Q8_K);

    [Theory]
    [MemberData(nameof(QuantTypes))]
    [InlineData(GgmlType.F16)]
    [InlineData(GgmlType.BF16)]
    public void Ggml_decodes_our_blocks_exactly_as_we_do(GgmlType type)
    {
        float[] x = TestData.Gaussian(seed: 77, 1024, scale: 0.7f);
        byte[] ours = TestData.Quantize(type, x);
        Assert.Equal(TestData.Dequantize(type, ours, x.Length), GgmlDequantize(type, ours, x.Length));
    }

    [Theory]
    [MemberData(nameof(QuantTypes))]
    [InlineData(GgmlType.BF16)]
    public void We_decode_ggml_blocks_exactly_as_ggml_does(GgmlType type)
    {
        float[] x = TestData.Gaussian(seed: 78, 1024, scale: 1.3f);
        byte[] theirs = GgmlQuantize(type, x);
        Assert.Equal(GgmlDequantize(type, theirs, x.Length), TestData.Dequantize(type, theirs, x.Length));
    }

    /// <summary>
    /// The KV cache's quantizer (the CPU queue's Convert to Q8_0/Q4_0) writes ggml's own blocks: the same bytes as
    /// quantize_row_q8_0_ref / quantize_row_q4_0_ref (Gaussian values: no element sits on a rounding tie, where ggml's scalar
    /// reference rounds Q8_0 half away from zero and its vector code, like ours, half to even).
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q8_0)]
    [InlineData(GgmlType.Q4_0)]
    public void The_kv_cache_quantizer_writes_the_blocks_ggml_writes(GgmlType type)
    {
        float[] x = TestData.Gaussian(seed: 80, 4096, scale: 2.1f);
        var ours = new byte[GgmlTypes.RowSize(type, x.Length)];
        fixed (float* px = x)
        fixed (byte* po = ours)
            Kernels.CacheQuantizer.Quantize(type, px, po, x.Length);
        Assert.Equal(GgmlQuantize(type, x), ours);
    }

    [Fact]
    public void Bf16_rounding_matches_ggml()
    {
        float[] x = [1f + MathF.Pow(2, -8), 1f + 3 * MathF.Pow(2, -8), -0f, float.NegativeInfinity, 3.0e38f, 1e-40f, float.NaN];
        x = [.. x, .. TestData.Gaussian(seed: 79, 57)];
        byte[] theirs = GgmlQuantize(GgmlType.BF16, x);
        Assert.Equal(theirs, TestData.Quantize(GgmlType.BF16, x));
    }
}

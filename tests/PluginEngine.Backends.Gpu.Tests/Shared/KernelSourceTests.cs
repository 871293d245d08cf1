using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>The one kernel source: what the portability header is given per vendor, and the geometry it relies on.</summary>
public sealed class KernelSourceTests
{
    [Fact]
    public void Cuda_unit_defines_PE_CUDA_and_a_warp_of_32()
    {
        string s = KernelSource.For(KernelDialect.Cuda, 32, "");
        Assert.Contains("#define PE_CUDA 1\n", s);
        Assert.Contains("#define PE_DEVICE_WARP 32\n", s);
        Assert.DoesNotContain("#define PE_HIP", s);
        Assert.Same(KernelSource.CudaDefault, s);
    }

    [Theory]
    [InlineData(64)] // gfx9 / CDNA
    [InlineData(32)] // RDNA
    public void Hip_unit_defines_PE_HIP_and_the_device_warp(int warp)
    {
        string s = KernelSource.For(KernelDialect.Hip, warp, "MATVEC_UNROLL=2");
        Assert.Contains("#define PE_HIP 1\n", s);
        Assert.Contains($"#define PE_DEVICE_WARP {warp}\n", s);
        Assert.Contains("#define MATVEC_UNROLL 2\n", s);
        Assert.DoesNotContain("#define PE_CUDA", s);
        // The header comes before the kernels, and the kernels use its names, not a vendor's.
        int header = s.IndexOf("#line 1 \"gpu_portability.h\"", StringComparison.Ordinal), body = s.IndexOf("#line 1 \"kernels.cu\"", StringComparison.Ordinal);
        Assert.True(header > 0 && body > header);
        string kernels = s[body..];
        foreach (string vendorOnly in new[] { "__shfl_xor_sync", "asm(", "griddepcontrol", "__ldcg", "__shfl_xor(" })
            Assert.DoesNotContain(vendorOnly, kernels);
    }

    [Fact]
    public void Warps_other_than_32_or_64_and_wave64_cuda_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelSource.DialectDefines(KernelDialect.Hip, 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => KernelSource.DialectDefines(KernelDialect.Cuda, 64));
    }

    [Fact]
    public void The_header_maps_each_vendor_choice()
    {
        string s = KernelSource.For(KernelDialect.Hip, 64, "");
        string header = s[s.IndexOf("#line 1 \"gpu_portability.h\"", StringComparison.Ordinal)..s.IndexOf("#line 1 \"kernels.cu\"", StringComparison.Ordinal)];
        Assert.Contains("#define lane_xor(v, o) __shfl_xor_sync(0xffffffffu, (v), (o))", header);   // CUDA
        Assert.Contains("#define lane_xor(v, o) __shfl_xor((v), (o), LANES)", header);              // HIP: width 32 within a wave64
        Assert.Contains("__builtin_amdgcn_sdot4", header);                                         // AMD int8 dot product
        Assert.Contains("dp4a.s32.s32", header);                                                   // NVIDIA's
        Assert.Contains("Portable fallback", header);                                               // neither
        Assert.Contains("griddepcontrol.wait", header);                                             // PDL: CUDA only
        Assert.Contains("#define LANES 32", header);
    }

    /// <summary>ROW_CHUNK = 32 lanes × 16 is the slide rule's chunk on every device; block sizes fill whole wave64 wavefronts.</summary>
    [Fact]
    public void Block_sizes_are_whole_wave64_wavefronts_and_the_row_chunk_is_vendor_neutral()
    {
        Assert.Equal(32 * 16, LaunchGeometry.RowChunkElements);
        var launches = new[]
        {
            LaunchGeometry.MatMul(100, 1), LaunchGeometry.MatMul(100, 9), LaunchGeometry.MatVecQ8(100, 1), LaunchGeometry.QuantizeX(7),
            LaunchGeometry.RmsNormRow(4096), LaunchGeometry.RmsNorm(3), LaunchGeometry.Attention(8, 2), LaunchGeometry.AttentionSplit(8, 4),
            LaunchGeometry.Elementwise(1000), LaunchGeometry.GetRows(3, 4096), LaunchGeometry.Dequantize(4, 4096),
        };
        foreach (var l in launches)
            Assert.True(l.BlockX % LaunchGeometry.BlockMultiple == 0, $"block of {l.BlockX} threads is not a whole number of 64-wide wavefronts");
    }
}

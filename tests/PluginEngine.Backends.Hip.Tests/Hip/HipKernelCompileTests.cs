using System.Buffers.Binary;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Hip.Native;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Hip;

/// <summary>
/// The one kernel source compiles with hiprtc for AMD targets, with no GPU: hiprtc is a plain library. CI installs Debian's
/// ROCm 5.2 (libamdhip64-5, which exports hiprtc, and libhiprtc-builtins5); without it the test is skipped with the
/// loader's reason. Only targets ROCm 5.2 knows: its hiprtc kills the whole process when asked for one it does not
/// (gfx1100), so no test may ask it for one.
/// </summary>
public sealed class HipKernelCompileTests
{
    private static Hiprtc LoadOrSkip()
    {
        var api = HipApi.TryLoad([], out string? why);
        if (api is null) Assert.Skip($"no HIP runtime on this machine: {why}");
        var hiprtc = Hiprtc.TryLoad([], api.Handle, api.LibraryName, out why);
        if (hiprtc is null) Assert.Skip($"no hiprtc on this machine: {why}");
        return hiprtc;
    }

    /// <summary>EF_AMDGPU_MACH values (the low byte of the code object's ELF e_flags).</summary>
    [Theory]
    [InlineData("gfx90a", 64, 0x3f)]  // CDNA 2 (MI200): wave64, v_dot4_i32_i8
    [InlineData("gfx1030", 32, 0x36)] // RDNA 2: wave32, v_dot4_i32_i8
    [InlineData("gfx900", 64, 0x2c)]  // GCN 5 (Vega 10): wave64, no dot instruction: the portable fallback
    public void Every_kernel_compiles_and_is_in_the_code_object(string arch, int warp, int mach)
    {
        var hiprtc = LoadOrSkip();
        var (image, _) = hiprtc.Compile(KernelSource.For(KernelDialect.Hip, warp, ""), KernelSource.ProgramName, arch);
        Assert.True(image.Length > 64 && image[0] == 0x7f && image[1] == (byte)'E' && image[2] == (byte)'L' && image[3] == (byte)'F', $"{arch}: not an ELF code object");
        Assert.Equal(224, image[18]); // e_machine EM_AMDGPU
        Assert.Equal(mach, (int)(BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan(48)) & 0xff)); // compiled for the asked processor
        string text = System.Text.Encoding.Latin1.GetString(image);
        foreach (string kernel in KernelSource.KernelNames())
            Assert.True(text.Contains(kernel + ".kd", StringComparison.Ordinal), $"{kernel} missing from the {arch} code object");
    }

    [Fact]
    public void A_compile_error_comes_back_with_the_log()
    {
        var hiprtc = LoadOrSkip();
        var e = Assert.Throws<PluginEngine.Backends.Gpu.Native.KernelCompileException>(() =>
            hiprtc.Compile("extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }", "broken.cu", "gfx90a"));
        Assert.Contains("broken.cu", e.Message);
        Assert.Contains("undefined_name", e.Message);
    }
}

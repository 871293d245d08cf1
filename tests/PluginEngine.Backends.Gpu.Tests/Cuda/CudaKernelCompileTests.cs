using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Cuda.Native;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Cuda;

/// <summary>
/// The kernels compile with NVRTC for the GPUs the plugin targets, with no GPU: NVRTC is a plain library. CI installs
/// Debian's NVRTC (CUDA 11.8, package libnvrtc11.2); without any NVRTC the test is skipped with the probe's reason.
/// A compile error here is the same one the plugin's probe would report on a GPU machine.
/// </summary>
public sealed class CudaKernelCompileTests
{
    [Theory]
    [InlineData(9, 0)] // H100 / H200
    [InlineData(8, 0)] // A100
    [InlineData(7, 5)] // T4: the oldest the kernels claim
    public void Every_kernel_compiles_and_is_in_the_image(int major, int minor)
    {
        var nvrtc = Nvrtc.TryLoad([], out string? why);
        if (nvrtc is null) Assert.Skip($"no NVRTC on this machine: {why}");
        var (image, isCubin) = nvrtc.Compile(KernelSource.CudaDefault, KernelSource.ProgramName, major, minor, ["--std=c++17"]);
        Assert.NotEmpty(image);
        // A CUBIN or PTX keeps extern "C" names verbatim: every kernel the queue looks up must be there.
        string text = System.Text.Encoding.Latin1.GetString(image);
        foreach (string kernel in KernelSource.KernelNames())
            Assert.True(text.Contains(kernel, StringComparison.Ordinal), $"{kernel} missing from the sm_{major}{minor} {(isCubin ? "CUBIN" : "PTX")}");
    }

    /// <summary>The tuning macros reach the code they tune: a non-default set compiles, and differs from the default image.</summary>
    [Fact]
    public void Tuning_defines_compile_and_change_the_image()
    {
        var nvrtc = Nvrtc.TryLoad([], out string? why);
        if (nvrtc is null) Assert.Skip($"no NVRTC on this machine: {why}");
        string tuned = KernelSource.For(KernelDialect.Cuda, 32, "MATVEC_UNROLL=8;SWIGLU_UNROLL=4;MATVEC_MIN_BLOCKS=16;MATMUL_T1_UNROLL=4;MMQ_TILED_UNROLL=2;ATTENTION_ROWS_P=4");
        Assert.Contains("#define MATVEC_MIN_BLOCKS 16\n", tuned);
        Assert.Same(KernelSource.CudaDefault, KernelSource.For(KernelDialect.Cuda, 32, ""));
        var (image, _) = nvrtc.Compile(tuned, KernelSource.ProgramName, 9, 0, ["--std=c++17"]);
        var (plain, _) = nvrtc.Compile(KernelSource.CudaDefault, KernelSource.ProgramName, 9, 0, ["--std=c++17"]);
        Assert.NotEqual(plain, image);
    }

    /// <summary>
    /// The decode switches of docs/gpu-kernels.md#decode-prefetch and #q4_k-decode-loads reach the sm_90 code: their
    /// defaults give the default image, and turning each one off changes it.
    /// </summary>
    [Fact]
    public void Decode_switches_reach_the_sm90_image()
    {
        var nvrtc = Nvrtc.TryLoad([], out string? why);
        if (nvrtc is null) Assert.Skip($"no NVRTC on this machine: {why}");
        var (plain, _) = nvrtc.Compile(KernelSource.CudaDefault, KernelSource.ProgramName, 9, 0, ["--std=c++17"]);
        var (defaults, _) = nvrtc.Compile(KernelSource.For(KernelDialect.Cuda, 32, "PDL_EARLY_TRIGGER=1;ATTENTION_PREFETCH_STEPS=1;Q4K_WIDE_LOADS=1;KV_BYTE_PERMUTE=1"),
            KernelSource.ProgramName, 9, 0, ["--std=c++17"]);
        Assert.Equal(plain, defaults);
        foreach (string off in new[] { "PDL_EARLY_TRIGGER=0", "ATTENTION_PREFETCH_STEPS=0", "Q4K_WIDE_LOADS=0", "KV_BYTE_PERMUTE=0" })
        {
            var (image, _) = nvrtc.Compile(KernelSource.For(KernelDialect.Cuda, 32, off), KernelSource.ProgramName, 9, 0, ["--std=c++17"]);
            Assert.False(plain.AsSpan().SequenceEqual(image), $"{off} left the sm_90 image unchanged");
        }
        // docs/gpu-kernels.md#decode-preload, and the attention's switches (#decode-attention-registers)
        foreach (string on in new[] { "MATVEC_PRELOAD=2", "SWIGLU_PRELOAD=1", "ATTENTION_SPLIT_P=8;ATTENTION_H128_BLOCKS=1" })
        {
            var (image, _) = nvrtc.Compile(KernelSource.For(KernelDialect.Cuda, 32, on), KernelSource.ProgramName, 9, 0, ["--std=c++17"]);
            Assert.False(plain.AsSpan().SequenceEqual(image), $"{on} left the sm_90 image unchanged");
        }
    }

    /// <summary>
    /// Every kernel fits its block on the SM's 65,536 registers (ptxas's count, in units of 8 per thread): a kernel that does
    /// not compiles fine and then fails every launch with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (the attention kernels did on
    /// an H100 before they got __launch_bounds__). The one-token *_h128 attention kernels also fit theirs without spilling.
    /// </summary>
    [Fact]
    public void Every_kernel_fits_its_block_in_the_register_file()
    {
        var nvrtc = Nvrtc.TryLoad([], out string? why);
        if (nvrtc is null) Assert.Skip($"no NVRTC on this machine: {why}");
        var (_, isCubin, log) = nvrtc.CompileWithLog(KernelSource.CudaDefault, KernelSource.ProgramName, 9, 0, ["--std=c++17", "--ptxas-options=-v"]);
        if (!isCubin) Assert.Skip($"NVRTC {nvrtc.Version} compiles sm_90 only to PTX: no register counts");
        var registers = new Dictionary<string, int>();
        var spills = new Dictionary<string, int>();
        string? kernel = null;
        foreach (string line in log.Split('\n'))
        {
            var entry = System.Text.RegularExpressions.Regex.Match(line, @"Compiling entry function '(\w+)'");
            if (entry.Success) kernel = entry.Groups[1].Value;
            var used = System.Text.RegularExpressions.Regex.Match(line, @"Used (\d+) registers");
            if (used.Success && kernel is not null) registers[kernel] = int.Parse(used.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            var spill = System.Text.RegularExpressions.Regex.Match(line, @"(\d+) bytes spill stores");
            if (spill.Success && kernel is not null) spills[kernel] = int.Parse(spill.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        }
        foreach (string name in KernelSource.KernelNames())
        {
            // The one-token attention kernels for heads up to 128 are the decode step's hot loop at depth: a spill there is
            // a local-memory round trip per step (docs/gpu-kernels.md#decode-attention-instructions).
            if (name.StartsWith("attention_", StringComparison.Ordinal) && name.EndsWith("_h128", StringComparison.Ordinal))
                Assert.True(spills.TryGetValue(name, out int spilled) && spilled == 0, $"{name} spills {spilled} bytes under its launch bound");
            Assert.True(registers.TryGetValue(name, out int regs), $"no register count for {name} in the ptxas log");
            int threads = name.StartsWith("attention_mma_", StringComparison.Ordinal) ? (int)LaunchGeometry.AttentionMma(1, 1).BlockX
                : name.StartsWith("attention_", StringComparison.Ordinal) ? LaunchGeometry.AttentionWarps * 32
                : name == "rms_norm" ? LaunchGeometry.NormThreads
                : name.StartsWith("mmq_", StringComparison.Ordinal) ? LaunchGeometry.MmqWarps * 32
                : Math.Max(LaunchGeometry.BlockThreads, LaunchGeometry.MatMulWarpsPerBlock * 32);
            int allocated = (regs + 7) / 8 * 8 * threads;
            Assert.True(allocated <= 65536, $"{name}: {regs} registers x {threads} threads = {allocated} > 65,536");
        }
    }
}

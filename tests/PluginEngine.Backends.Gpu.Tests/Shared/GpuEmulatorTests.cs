using System.Diagnostics;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// The GPU kernels run on the CPU (docs/gpu-kernels.md#kernels-on-the-cpu): the HIP unit KernelSource assembles is compiled by
/// the host's C++ compiler against Emulator/gpu_emulator.h, a stand-in for the device runtime (a block's threads as coroutines,
/// warp shuffles and __syncthreads as barriers), and Emulator/attention_check.cpp runs every one-token, rows and per-token
/// attention kernel over F32, F16, Q8_0 and Q4_0 caches, aligned and not, against attention computed in double;
/// Emulator/decode_check.cpp the decode step's quantizer and mat-vecs. So what the kernels compute is checked on every
/// machine, where the conformance kit needs a GPU.
/// </summary>
public sealed class GpuEmulatorTests
{
    [Theory]
    [InlineData("")]
    [InlineData("KV_BYTE_PERMUTE=0")]
    [InlineData("ATTENTION_SPLIT_P=8;ATTENTION_DECODE_P=2;ATTENTION_ROWS_P=4;ATTENTION_H128_BLOCKS=1")] // other shares of a step's positions
    public void Attention_kernels_match_attention_in_double(string tuning) => RunCheck("attention_check.cpp", tuning, minimumCases: 500);

    /// <summary>
    /// Emulator/decode_check.cpp: quantize_x_q8 bit for bit against its definition, and the decode mat-vecs (matvec_q8_* with
    /// three targets, set and +=; matmul_q8_* with three tokens; matvec_f16) of Q4_0, Q8_0, Q4_K, Q6_K and F16 weights
    /// against the same products in double; rms_norm_q8_row and swiglu_q8_* against their definitions, their quantized
    /// outputs bit for bit.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("MATVEC_PRELOAD=4;MATVEC_UNROLL=2;Q4K_WIDE_LOADS=0")]
    public void Decode_quantizer_matvecs_norm_and_swiglu_match_double(string tuning) => RunCheck("decode_check.cpp", tuning, minimumCases: 85);

    private static void RunCheck(string check, string tuning, int minimumCases)
    {
        string compiler = FindCompiler() ?? "";
        if (compiler.Length == 0) Assert.Skip("no g++ on this machine (the Debian package g++ provides it): the kernels cannot be run on the CPU emulator");
        string dir = Directory.CreateTempSubdirectory("pe-gpu-emulator-").FullName;
        try
        {
            string emulator = Path.Combine(AppContext.BaseDirectory, "Emulator");
            File.WriteAllText(Path.Combine(dir, "unit.cu"), KernelSource.For(KernelDialect.Hip, 32, tuning));
            foreach (string file in new[] { "gpu_emulator.h", "check_report.h", check }) File.Copy(Path.Combine(emulator, file), Path.Combine(dir, file));
            // -ffp-contract=off: the host must not fuse what the kernels write as separate operations; -U_FORTIFY_SOURCE: the
            // emulator switches stacks with _longjmp, which the fortified longjmp refuses.
            var (built, buildLog) = Run(compiler, dir, $"-std=c++17 -O1 -U_FORTIFY_SOURCE -ffp-contract=off -include gpu_emulator.h {check} -o check", 600);
            Assert.True(built == 0, $"{check} did not compile ({compiler}, exit {built}):\n{Tail(buildLog, 4000)}");
            var (exit, output) = Run(Path.Combine(dir, "check"), dir, "", 600);
            string failures = string.Join('\n', output.Split('\n').Where(l => l.StartsWith("FAIL", StringComparison.Ordinal)).Take(20));
            Assert.True(exit == 0, $"{check} on the emulator ({(tuning.Length == 0 ? "default defines" : tuning)}) exit {exit}:\n{failures}\n{Tail(output, 1500)}");
            Assert.Matches(@"cases: (\d+), failed: 0", output);
            int cases = int.Parse(System.Text.RegularExpressions.Regex.Match(output, @"cases: (\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(cases >= minimumCases, $"{check} ran {cases} cases, fewer than the {minimumCases} it lists");
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    private static string? FindCompiler()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "g++");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    private static (int Exit, string Output) Run(string program, string dir, string arguments, int timeoutSeconds)
    {
        var info = new ProcessStartInfo(program, arguments) { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {program}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeoutSeconds * 1000))
        {
            process.Kill(entireProcessTree: true);
            return (-1, $"{program} ran past {timeoutSeconds} s");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    private static string Tail(string text, int chars) => text.Length <= chars ? text : text[^chars..];
}

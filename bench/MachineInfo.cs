using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace PluginEngine.Bench;

/// <summary>The machine a bench ran on: CPU model, SIMD support, cores, OS and runtime.</summary>
/// <param name="CpuModel">CPU model name (/proc/cpuinfo on Linux; the architecture elsewhere).</param>
/// <param name="Isa">SIMD instruction sets the runtime reports as supported, space-separated.</param>
/// <param name="LogicalCores">Logical processors available to the process.</param>
/// <param name="OperatingSystem">OS description.</param>
/// <param name="Runtime">.NET runtime description.</param>
public sealed record MachineInfo(string CpuModel, string Isa, int LogicalCores, string OperatingSystem, string Runtime)
{
    /// <summary>Describes this machine.</summary>
    public static MachineInfo Current() => new(ReadCpuModel(), DescribeIsa(), Environment.ProcessorCount,
        RuntimeInformation.OSDescription, RuntimeInformation.FrameworkDescription);

    /// <summary>The SIMD sets the kernels may use here (the ones that matter for GGUF dot products).</summary>
    public static string DescribeIsa()
    {
        var sets = new List<string>();
        if (Avx512F.IsSupported) sets.Add("AVX512F");
        if (Avx512BW.IsSupported) sets.Add("AVX512BW");
        if (Avx512Vbmi.IsSupported) sets.Add("AVX512VBMI");
        if (Avx2.IsSupported) sets.Add("AVX2");
        if (Fma.IsSupported) sets.Add("FMA");
        if (AvxVnni.IsSupported) sets.Add("AVXVNNI");
        if (AdvSimd.IsSupported) sets.Add("NEON");
        if (Dp.IsSupported) sets.Add("DOTPROD");
        return sets.Count == 0 ? "scalar" : string.Join(' ', sets);
    }

    private static string ReadCpuModel()
    {
        const string cpuinfo = "/proc/cpuinfo";
        try
        {
            if (File.Exists(cpuinfo))
            {
                foreach (string line in File.ReadLines(cpuinfo))
                {
                    // x86 says "model name", many ARM kernels only "Hardware" or "CPU part"; the first name found wins.
                    if (line.StartsWith("model name", StringComparison.Ordinal) || line.StartsWith("Hardware", StringComparison.Ordinal))
                    {
                        int colon = line.IndexOf(':');
                        if (colon >= 0 && line[(colon + 1)..].Trim() is { Length: > 0 } name) return name;
                    }
                }
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }
}

/// <summary>Memory of this process as the OS counts it.</summary>
public static class ProcessMemory
{
    /// <summary>Resident set size: VmRSS from /proc/self/status on Linux, <see cref="Environment.WorkingSet"/> elsewhere.</summary>
    public static long ResidentBytes()
    {
        const string status = "/proc/self/status";
        try
        {
            if (File.Exists(status))
            {
                foreach (string line in File.ReadLines(status))
                {
                    if (!line.StartsWith("VmRSS:", StringComparison.Ordinal)) continue;
                    // "VmRSS:	  123456 kB"
                    var parts = line["VmRSS:".Length..].Split(' ', '\t', StringSplitOptions.RemoveEmptyEntries);
                    if (parts.Length >= 1 && long.TryParse(parts[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long kb))
                        return kb * 1024;
                }
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return Environment.WorkingSet;
    }
}

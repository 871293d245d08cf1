using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu;

/// <summary>The host processor as a backend device. Weights are read in place from host memory.</summary>
public sealed class CpuDevice : IBackendDevice
{
    public CpuDevice(PluginOptions options)
    {
        Threads = ResolveThreads(options);
        RepackWeights = ResolveRepack(Environment.GetEnvironmentVariable);
        long total = (long)GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        Description = new DeviceDescription(
            Backend: "cpu",
            Name: CpuName(),
            Kind: DeviceKind.Cpu,
            StableId: "cpu:0",
            TotalMemory: total,
            FreeMemory: total - GC.GetTotalMemory(false),
            Capabilities: BackendCapabilities.HostImport | BackendCapabilities.HostMemoryInPlace,
            Details: $"{DescribeIsa()}, {Threads} threads");
        Buffers = new CpuBufferProvider(Description);
    }

    public DeviceDescription Description { get; }

    public IBufferProvider Buffers { get; }

    /// <summary>Worker threads the kernels use.</summary>
    public int Threads { get; }

    /// <summary>Whether Q4_0 weight matrices are kept repacked for the matmul kernels (on unless the environment variable
    /// PLUGINENGINE_CPU_REPACK is <c>off</c>): docs/batching.md#cpu-weights-repacked-once.</summary>
    public bool RepackWeights { get; }

    /// <summary>A queue with its own worker pool of <see cref="Threads"/> threads.</summary>
    public IComputeQueue CreateQueue() => new CpuComputeQueue(this, Threads, RepackWeights);

    /// <summary>PLUGINENGINE_CPU_REPACK: <c>on</c> (or unset) or <c>off</c> (an environment variable only, for A/B runs: the plugin's
    /// options in plugins.json stay <c>threads</c>).</summary>
    public static bool ResolveRepack(Func<string, string?> environment)
    {
        string? value = environment("PLUGINENGINE_CPU_REPACK");
        if (string.IsNullOrWhiteSpace(value)) return true;
        return value.Trim().ToLowerInvariant() switch
        {
            "on" or "1" => true,
            "off" or "0" => false,
            _ => throw new PluginOptionException($"environment variable PLUGINENGINE_CPU_REPACK: expected 'on' or 'off', got '{value}'"),
        };
    }

    /// <summary>The <c>threads</c> option; 0 or absent means every core.</summary>
    public static int ResolveThreads(PluginOptions options)
    {
        int t = options.GetInt32("threads", 0, 0, 4096);
        return t == 0 ? Environment.ProcessorCount : t;
    }

    /// <summary>The widest SIMD instruction set the kernels will use on this processor.</summary>
    public static string DescribeIsa()
        => Avx512F.IsSupported && Avx512BW.IsSupported ? "AVX-512" : Avx2.IsSupported ? "AVX2" : Vector128HardwareName();

    private static string Vector128HardwareName() => System.Runtime.Intrinsics.Vector128.IsHardwareAccelerated ? "SIMD128" : "scalar";

    private static string CpuName()
    {
        try
        {
            if (OperatingSystem.IsLinux())
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name", StringComparison.Ordinal))
                        return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }
}

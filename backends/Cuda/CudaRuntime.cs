using PluginEngine.Abstractions;
using System.Text;
using PluginEngine.Backends.Cuda.Native;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// The CUDA probe: loads libcuda, opens the device's primary context, reads its facts, loads NVRTC and the kernels
/// (from the disk cache, else compiled) and cuBLAS, and hands the shared <see cref="GpuRuntime"/> back, or the reason
/// why not. Everything after the probe is the shared GPU code base's (backends/Gpu).
/// </summary>
internal static unsafe class CudaRuntime
{
    /// <summary>The runtime and the probe's description ("H100 (sm_90, ...), driver ..., NVRTC ...; ..."), or null and the reason.</summary>
    /// <summary>The number of CUDA devices, or 0 and the reason (no driver, cuInit failed, none present).</summary>
    public static int CountDevices(out string reason)
    {
        var driver = CudaDriver.TryLoad(out string? failure);
        if (driver is null) { reason = failure!; return 0; }
        int r = driver.cuInit(0);
        if (r != 0) { reason = $"cuInit failed: {driver.ErrorName(r)} ({r})"; return 0; }
        int count;
        r = driver.cuDeviceGetCount(&count);
        if (r != 0) { reason = $"cuDeviceGetCount failed: {driver.ErrorName(r)} ({r})"; return 0; }
        reason = count == 0 ? "no CUDA device" : $"{count} CUDA device(s)";
        return count;
    }

    /// <summary>
    /// As above; <paramref name="virtualIndex"/> above 0 opens the device again in a context of its own (cuCtxCreate) rather
    /// than the primary one, with its own copy of the kernel module (docs/multi-gpu.md#two-devices-on-one-gpu).
    /// </summary>
    public static GpuRuntime? TryCreate(int ordinal, int virtualIndex, string pluginDirectory, string? cacheDirectory, GpuKernelOptions kernels, out string reason, out string details)
    {
        details = "";
        var driver = CudaDriver.TryLoad(out string? failure);
        if (driver is null) { reason = failure!; return null; }
        int r = driver.cuInit(0);
        if (r != 0) { reason = $"cuInit failed: {driver.ErrorName(r)} ({r})"; return null; }
        int count;
        r = driver.cuDeviceGetCount(&count);
        if (r != 0) { reason = $"cuDeviceGetCount failed: {driver.ErrorName(r)} ({r})"; return null; }
        if (count == 0) { reason = "no CUDA device"; return null; }
        if (ordinal >= count) { reason = $"device index {ordinal} requested, {count} CUDA device(s) present"; return null; }
        try
        {
            int device;
            driver.Check(driver.cuDeviceGet(&device, ordinal), "cuDeviceGet");
            nint context;
            if (virtualIndex == 0) driver.Check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
            else context = CudaNative.CreateContext(driver, device);
            var native = new CudaNative(driver, device, context);
            var (facts, major, minor, driverVersion) = ReadFacts(driver, device);
            bool programmatic = kernels.ProgrammaticLaunch && major >= 9 && driver.cuLaunchKernelEx != null;
            var rt = new GpuRuntime(native, facts, kernels, programmatic);
            rt.MakeCurrent();
            var nvrtc = Nvrtc.TryLoad(NvrtcFolders(pluginDirectory), out failure);
            if (nvrtc is null) { reason = failure!; return null; }
            rt.LoadKernels(new NvrtcKernelCompiler(nvrtc, major, minor), KernelSource.For(KernelDialect.Cuda, 32, kernels.KernelDefines),
                           cacheDirectory ?? GpuRuntime.DefaultCacheDirectory("cuda"));
            if (kernels.BlasPrompt)
            {
                var blas = Cublas.TryLoad(NvrtcFolders(pluginDirectory), out failure);
                rt.Blas = blas;
                rt.BlasStatus = blas is null ? $"no cuBLAS ({failure}): prompt matmuls on the plugin's kernels" : $"prompt GEMM: {blas.LibraryName}";
            }
            else rt.BlasStatus = "prompt GEMM: the plugin's kernels (gemm option)";
            string driverText = $"{driverVersion / 1000}.{driverVersion % 1000 / 10}";
            reason = $"{facts.Name} ({facts.Target}, {facts.TotalMemory >> 20} MiB), driver {driverText}, NVRTC {nvrtc.Version}, kernels {rt.KernelOrigin}; " +
                     $"{rt.BlasStatus}; decode mat-vec: {(kernels.Int8MatVec ? "8-bit activations (dp4a)" : "F32 activations")}; " +
                     $"int8 tensor-core matmuls: {(rt.IntegerMma ? $"{kernels.MmaMinTokensFor(GgmlType.Q4_0)}{(kernels.MmaMinTokens > 0 ? "" : $" (Q4_K {kernels.MmaMinTokensFor(GgmlType.Q4_K)})")}-{kernels.MmaMaxTokens} tokens" : kernels.IntegerMma ? "off (needs sm_80)" : "off")}; " +
                     $"step graphs: {(kernels.Graphs ? driver.HasGraphs ? "on" : "off (the driver lacks the graph entry points step graphs need, CUDA 12.4 and later)" : "off")}; fused ops: {(kernels.FusedOps ? "on" : "off")}; " +
                     $"programmatic launch: {(programmatic ? "on" : kernels.ProgrammaticLaunch ? "off (needs sm_90 and cuLaunchKernelEx)" : "off")}; " +
                     $"decode attention split: {(kernels.AttentionChunk > 0 ? $"over {kernels.AttentionChunk} positions per block" : "off")}; " +
                     $"prompt attention on the tensor cores: {(rt.FlashAttention ? $"from {LaunchGeometry.AttentionMmaMinTokens} tokens (F16 cache, head 64/128)" : kernels.FlashAttention ? "off (needs sm_80)" : "off")}" +
                     (kernels.KernelDefines.Length > 0 ? $"; kernel tuning defines: {kernels.KernelDefines}" : "");
            details = $"{facts.Target}, {facts.Multiprocessors} SMs, driver {driverText}, NVRTC {nvrtc.Version}, read-only host register {(facts.ReadOnlyHostRegister ? "yes" : "no")}";
            return rt;
        }
        catch (KernelCompileException e) { reason = $"kernel compile failure: {e.Message}"; return null; }
        catch (GpuException e) { reason = e.Message; return null; }
        catch (IOException e) { reason = $"kernel cache: {e.Message}"; return null; }
    }

    /// <summary>Folders searched for NVRTC when the loader's default search fails: beside the plugin, then the CUDA toolkit.</summary>
    public static IEnumerable<string> NvrtcFolders(string pluginDirectory)
    {
        yield return pluginDirectory;
        if (Environment.GetEnvironmentVariable("CUDA_PATH") is { Length: > 0 } cudaPath) yield return Path.Combine(cudaPath, "lib64");
        yield return "/usr/local/cuda/lib64";
        yield return "/usr/local/cuda/targets/x86_64-linux/lib";
    }

    private static (GpuDeviceFacts Facts, int Major, int Minor, int DriverVersion) ReadFacts(CudaDriver driver, int device)
    {
        byte* name = stackalloc byte[256];
        driver.Check(driver.cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        string deviceName = Encoding.UTF8.GetString(name, new ReadOnlySpan<byte>(name, 256).IndexOf((byte)0) is int n and >= 0 ? n : 256);
        byte* bus = stackalloc byte[64];
        driver.Check(driver.cuDeviceGetPCIBusId(bus, 64, device), "cuDeviceGetPCIBusId");
        string pciBusId = Encoding.ASCII.GetString(bus, new ReadOnlySpan<byte>(bus, 64).IndexOf((byte)0) is int m and >= 0 ? m : 64);
        int major = driver.Attribute(device, CudaDriver.AttrComputeCapabilityMajor);
        int minor = driver.Attribute(device, CudaDriver.AttrComputeCapabilityMinor);
        // Older drivers do not know attribute 113 and return an error: treat as "not supported".
        int ro;
        bool readOnly = driver.cuDeviceGetAttribute(&ro, CudaDriver.AttrReadOnlyHostRegisterSupported, device) == 0 && ro != 0;
        nuint total;
        driver.Check(driver.cuDeviceTotalMem(&total, device), "cuDeviceTotalMem");
        int version;
        driver.Check(driver.cuDriverGetVersion(&version), "cuDriverGetVersion");
        var facts = new GpuDeviceFacts(
            Name: deviceName,
            StableId: pciBusId,
            Target: $"sm_{major}{minor}",
            Integrated: driver.Attribute(device, CudaDriver.AttrIntegrated) != 0,
            CanMapHostMemory: driver.Attribute(device, CudaDriver.AttrCanMapHostMemory) != 0,
            ReadOnlyHostRegister: readOnly,
            Multiprocessors: driver.Attribute(device, CudaDriver.AttrMultiprocessorCount),
            TotalMemory: (long)total,
            WarpSize: 32);
        return (facts, major, minor, version);
    }
}

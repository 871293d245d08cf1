using System.Text;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;
using PluginEngine.Backends.Hip.Native;

namespace PluginEngine.Backends.Hip;

/// <summary>
/// The HIP probe: loads the HIP runtime, initialises it, opens the device, reads its facts (name, gcnArchName,
/// integrated or discrete, warp size, memory), loads hiprtc and the kernels (from the disk cache, else compiled for the
/// device's arch) and hands the shared <see cref="GpuRuntime"/> back, or the reason why not, in the runtime's own words.
/// </summary>
internal static unsafe class HipRuntime
{
    /// <summary>The number of HIP devices, or 0 and the reason (no runtime, hipInit failed, none present).</summary>
    public static int CountDevices(string pluginDirectory, out string reason)
    {
        var api = HipApi.TryLoad(RocmFolders(pluginDirectory), out string? failure);
        if (api is null) { reason = failure!; return 0; }
        int r = api.hipInit(0);
        if (r != 0) { reason = $"no AMD GPU: hipInit failed: {api.ErrorName(r)} ({r}) [{api.LibraryName}]"; return 0; }
        int count;
        r = api.hipGetDeviceCount(&count);
        if (r != 0) { reason = $"no AMD GPU: hipGetDeviceCount failed: {api.ErrorName(r)} ({r}) [{api.LibraryName}]"; return 0; }
        reason = count == 0 ? $"no AMD GPU: hipGetDeviceCount found 0 devices [{api.LibraryName}]" : $"{count} HIP device(s)";
        return count;
    }

    /// <summary>The runtime and the probe's description, or null and the reason.</summary>
    public static GpuRuntime? TryCreate(int ordinal, string pluginDirectory, string? cacheDirectory, GpuKernelOptions kernels, out string reason, out string details)
    {
        details = "";
        var api = HipApi.TryLoad(RocmFolders(pluginDirectory), out string? failure);
        if (api is null) { reason = failure!; return null; }
        // hipInit is where a machine without an AMD GPU (or without access to /dev/kfd) says so: hipErrorNoDevice or
        // hipErrorInvalidDevice. Its own words are the reason.
        int r = api.hipInit(0);
        if (r != 0) { reason = $"no AMD GPU: hipInit failed: {api.ErrorName(r)} ({r}) [{api.LibraryName}]"; return null; }
        int count;
        r = api.hipGetDeviceCount(&count);
        if (r != 0) { reason = $"no AMD GPU: hipGetDeviceCount failed: {api.ErrorName(r)} ({r}) [{api.LibraryName}]"; return null; }
        if (count == 0) { reason = $"no AMD GPU: hipGetDeviceCount found 0 devices [{api.LibraryName}]"; return null; }
        if (ordinal >= count) { reason = $"device index {ordinal} requested, {count} HIP device(s) present"; return null; }
        try
        {
            var native = new HipNative(api, ordinal);
            native.MakeCurrent();
            var facts = ReadFacts(api, ordinal, kernels.ReadOnlyHostRegister);
            int runtimeVersion;
            api.Check(api.hipRuntimeGetVersion(&runtimeVersion), "hipRuntimeGetVersion");
            var rt = new GpuRuntime(native, facts, kernels, programmaticLaunch: false);
            SystemMemory? system = null;
            if (facts.Integrated)
            {
                // An APU's memory is the system's: plan with /proc/meminfo (a reserved huge page pool counted apart), not
                // with the runtime's view of the carve-out.
                system = SystemMemory.Read();
                if (system is { } sm) rt.MemoryReport = () => SystemMemory.Read() is { } now ? (now.Available, now.Total) : (sm.Available, sm.Total);
            }
            var hiprtc = Hiprtc.TryLoad(RocmFolders(pluginDirectory), api.Handle, api.LibraryName, out failure);
            if (hiprtc is null) { reason = failure!; return null; }
            rt.LoadKernels(new HiprtcKernelCompiler(hiprtc, facts.Target), KernelSource.For(KernelDialect.Hip, facts.WarpSize, kernels.KernelDefines),
                           cacheDirectory ?? GpuRuntime.DefaultCacheDirectory("hip"));
            rt.BlasStatus = "prompt GEMM: the plugin's kernels (no hipBLAS/rocBLAS binding yet)";
            string version = $"{runtimeVersion / 10_000_000}.{runtimeVersion / 100_000 % 100}";
            string kind = facts.Integrated ? "integrated" : "discrete";
            string memory = system is { } s
                ? $"{s.Total >> 20} MiB system memory{(s.PoolNote.Length > 0 ? $", {s.PoolNote}" : "")}"
                : $"{facts.TotalMemory >> 20} MiB";
            reason = $"{facts.Name} ({facts.Target}, {kind}, wave{facts.WarpSize}, {memory}), HIP {version} ({api.LibraryName}), hiprtc {hiprtc.Version}, " +
                     $"kernels {rt.KernelOrigin}; {rt.BlasStatus}; decode mat-vec: {(kernels.Int8MatVec ? "8-bit activations" : "F32 activations")}; " +
                     $"fused ops: {(kernels.FusedOps ? "on" : "off")}; host registration: {native.RegistrationFlags(facts.ReadOnlyHostRegister)}; " +
                     $"decode attention split: {(kernels.AttentionChunk > 0 ? $"over {kernels.AttentionChunk} positions per block" : "off")}" +
                     (kernels.KernelDefines.Length > 0 ? $"; kernel tuning defines: {kernels.KernelDefines}" : "");
            details = $"{facts.Target}, {kind}, wave{facts.WarpSize}, {facts.Multiprocessors} CUs, HIP {version}, hiprtc {hiprtc.Version}, " +
                      $"host registration {native.RegistrationFlags(facts.ReadOnlyHostRegister)}" + (system is { PoolNote.Length: > 0 } p ? $", {p.PoolNote}" : "");
            return rt;
        }
        catch (KernelCompileException e) { reason = $"kernel compile failure: {e.Message}"; return null; }
        catch (GpuException e) { reason = e.Message; return null; }
        catch (IOException e) { reason = $"kernel cache: {e.Message}"; return null; }
    }

    /// <summary>Folders searched when the loader's default search fails: beside the plugin, $ROCM_PATH/lib, /opt/rocm/lib.</summary>
    public static IEnumerable<string> RocmFolders(string pluginDirectory)
    {
        yield return pluginDirectory;
        if (Environment.GetEnvironmentVariable("ROCM_PATH") is { Length: > 0 } rocm) yield return Path.Combine(rocm, "lib");
        yield return "/opt/rocm/lib";
    }

    private static GpuDeviceFacts ReadFacts(HipApi api, int device, bool readOnlyRegister)
    {
        byte* name = stackalloc byte[256];
        api.Check(api.hipDeviceGetName(name, 256, device), "hipDeviceGetName");
        byte* bus = stackalloc byte[64];
        api.Check(api.hipDeviceGetPCIBusId(bus, 64, device), "hipDeviceGetPCIBusId");
        string arch = api.ArchName(device);
        if (arch.Length == 0) throw new GpuException("hipGetDeviceProperties (gcnArchName)", 0, "the device reported no architecture name");
        int warp = api.Attribute(device, HipApi.AttrWarpSize, "warpSize");
        if (warp is not (32 or 64)) warp = HipArch.DefaultWarpSize(arch);
        nuint total;
        api.Check(api.hipDeviceTotalMem(&total, device), "hipDeviceTotalMem");
        return new GpuDeviceFacts(
            Name: HipApi.CString(new ReadOnlySpan<byte>(name, 256)),
            StableId: HipApi.CString(new ReadOnlySpan<byte>(bus, 64)),
            Target: arch,
            Integrated: api.Attribute(device, HipApi.AttrIntegrated, "integrated") != 0,
            CanMapHostMemory: api.Attribute(device, HipApi.AttrCanMapHostMemory, "canMapHostMemory") != 0,
            ReadOnlyHostRegister: readOnlyRegister,
            Multiprocessors: api.Attribute(device, HipApi.AttrMultiprocessorCount, "multiProcessorCount"),
            TotalMemory: (long)total,
            WarpSize: warp,
            ReadOnlyHostRegisterFallback: true);
    }
}

using System.Text;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Cuda.Kernels;
using PluginEngine.Backends.Cuda.Native;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// Everything the probe found and set up for one GPU: the driver, the device's primary context, its facts and
/// the loaded kernel module. Created by <see cref="TryCreate"/>, which turns every failure into a reason.
/// </summary>
internal sealed unsafe class CudaRuntime
{
    [ThreadStatic] private static nint t_currentContext;

    private readonly Dictionary<string, nint> _functions = new(StringComparer.Ordinal);

    private CudaRuntime(CudaDriver driver, int device, nint context)
    {
        Driver = driver;
        Device = device;
        Context = context;
    }

    public CudaDriver Driver { get; }

    /// <summary>CUdevice handle.</summary>
    public int Device { get; }

    /// <summary>The device's primary context.</summary>
    public nint Context { get; }

    public string Name { get; private set; } = "";
    public string PciBusId { get; private set; } = "";
    public int Major { get; private set; }
    public int Minor { get; private set; }
    public bool Integrated { get; private set; }
    public bool CanMapHostMemory { get; private set; }
    public bool ReadOnlyHostRegister { get; private set; }
    public int Multiprocessors { get; private set; }
    public long TotalMemory { get; private set; }
    public int DriverVersion { get; private set; }
    public string NvrtcVersion { get; private set; } = "";

    /// <summary>Which matmul implementations queues use.</summary>
    public CudaKernelOptions Options { get; private set; } = CudaKernelOptions.Default;

    /// <summary>Whether kernels are launched with programmatic stream serialization: the option is on, the device is sm_90 or
    /// later (the kernels' griddepcontrol instructions exist there) and the driver has cuLaunchKernelEx.</summary>
    public bool ProgrammaticLaunch => Options.ProgrammaticLaunch && Major >= 9 && Driver.cuLaunchKernelEx != null;

    /// <summary>cuBLAS for the prompt path, or null (not wanted, or not found: <see cref="BlasStatus"/> says which).</summary>
    public Cublas? Blas { get; private set; }

    /// <summary>What the prompt path runs on, for the probe description.</summary>
    public string BlasStatus { get; private set; } = "";

    /// <summary>"compiled" or "cached" (+ cubin/ptx), for the probe description.</summary>
    public string KernelOrigin { get; private set; } = "";

    /// <summary>
    /// Loads libcuda, initialises the driver, opens device <paramref name="ordinal"/>, loads NVRTC and gets the
    /// kernels (from the disk cache, else compiled). Returns null and the reason when any step fails.
    /// </summary>
    public static CudaRuntime? TryCreate(int ordinal, string pluginDirectory, string? cacheDirectory, CudaKernelOptions kernels, out string reason)
    {
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
            driver.Check(driver.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
            var rt = new CudaRuntime(driver, device, context);
            rt.ReadFacts();
            rt.MakeCurrent();
            var nvrtc = Nvrtc.TryLoad(NvrtcFolders(pluginDirectory), out failure);
            if (nvrtc is null) { reason = failure!; return null; }
            rt.NvrtcVersion = nvrtc.Version;
            rt.Options = kernels;
            rt.LoadKernels(nvrtc, cacheDirectory ?? DefaultCacheDirectory());
            if (kernels.CublasPrompt)
            {
                rt.Blas = Cublas.TryLoad(NvrtcFolders(pluginDirectory), out failure);
                rt.BlasStatus = rt.Blas is null ? $"no cuBLAS ({failure}): prompt matmuls on the plugin's kernels" : $"prompt GEMM: {rt.Blas.LibraryName}";
            }
            else rt.BlasStatus = "prompt GEMM: the plugin's kernels (gemm option)";
            reason = $"{rt.Name} (sm_{rt.Major}{rt.Minor}, {rt.TotalMemory >> 20} MiB), driver {rt.DriverVersion / 1000}.{rt.DriverVersion % 1000 / 10}, NVRTC {rt.NvrtcVersion}, kernels {rt.KernelOrigin}; " +
                     $"{rt.BlasStatus}; decode mat-vec: {(kernels.Int8MatVec ? "8-bit activations (dp4a)" : "F32 activations")}; " +
                     $"step graphs: {(kernels.Graphs ? driver.HasGraphs ? "on" : "off (the driver has no graph API)" : "off")}; fused ops: {(kernels.FusedOps ? "on" : "off")}; " +
                     $"programmatic launch: {(rt.ProgrammaticLaunch ? "on" : kernels.ProgrammaticLaunch ? "off (needs sm_90 and cuLaunchKernelEx)" : "off")}; " +
                     $"decode attention split: {(kernels.AttentionChunk > 0 ? $"over {kernels.AttentionChunk} positions per block" : "off")}" +
                     (kernels.KernelDefines.Length > 0 ? $"; kernel tuning defines: {kernels.KernelDefines}" : "");
            return rt;
        }
        catch (KernelCompileException e) { reason = $"kernel compile failure: {e.Message}"; return null; }
        catch (CudaException e) { reason = e.Message; return null; }
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

    /// <summary>PLUGINENGINE_CACHE/cuda, else $XDG_CACHE_HOME/pluginengine/cuda, else ~/.cache/pluginengine/cuda.</summary>
    public static string DefaultCacheDirectory()
    {
        if (Environment.GetEnvironmentVariable("PLUGINENGINE_CACHE") is { Length: > 0 } own) return Path.Combine(own, "cuda");
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string root = string.IsNullOrEmpty(xdg) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache") : xdg;
        return Path.Combine(root, "pluginengine", "cuda");
    }

    /// <summary>Makes this device's context current on the calling thread (once per thread).</summary>
    public void MakeCurrent()
    {
        if (t_currentContext == Context) return;
        Driver.Check(Driver.cuCtxSetCurrent(Context), "cuCtxSetCurrent");
        t_currentContext = Context;
    }

    private readonly List<CudaStepGraph> _captures = new();

    /// <summary>A queue's step graph announces itself, so buffer work can end its capture first (see <see cref="EnterBufferWork"/>).</summary>
    internal void AddCapture(CudaStepGraph graph) { lock (_captures) _captures.Add(graph); }

    internal void RemoveCapture(CudaStepGraph graph) { lock (_captures) _captures.Remove(graph); }

    /// <summary>
    /// Call before buffer work (uploads, memsets, downloads, frees), which runs on the legacy default stream: queues'
    /// streams synchronize with that stream, and work there while one of them is being captured would invalidate the
    /// capture. So every running capture on this device is ended first, and what it recorded is launched.
    /// </summary>
    internal void EnterBufferWork()
    {
        MakeCurrent();
        lock (_captures)
            foreach (var graph in _captures) graph.Flush();
    }

    /// <summary>A kernel of the loaded module.</summary>
    public nint Function(string name)
        => _functions.TryGetValue(name, out nint f) ? f : throw new InvalidOperationException($"cuda: kernel '{name}' is not in the module");

    public (long Free, long Total) QueryMemory()
    {
        MakeCurrent();
        nuint free, total;
        Driver.Check(Driver.cuMemGetInfo(&free, &total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    private void ReadFacts()
    {
        byte* name = stackalloc byte[256];
        Driver.Check(Driver.cuDeviceGetName(name, 256, Device), "cuDeviceGetName");
        Name = Encoding.UTF8.GetString(name, new ReadOnlySpan<byte>(name, 256).IndexOf((byte)0) is int n and >= 0 ? n : 256);
        byte* bus = stackalloc byte[64];
        Driver.Check(Driver.cuDeviceGetPCIBusId(bus, 64, Device), "cuDeviceGetPCIBusId");
        PciBusId = Encoding.ASCII.GetString(bus, new ReadOnlySpan<byte>(bus, 64).IndexOf((byte)0) is int m and >= 0 ? m : 64);
        Major = Driver.Attribute(Device, CudaDriver.AttrComputeCapabilityMajor);
        Minor = Driver.Attribute(Device, CudaDriver.AttrComputeCapabilityMinor);
        Integrated = Driver.Attribute(Device, CudaDriver.AttrIntegrated) != 0;
        CanMapHostMemory = Driver.Attribute(Device, CudaDriver.AttrCanMapHostMemory) != 0;
        Multiprocessors = Driver.Attribute(Device, CudaDriver.AttrMultiprocessorCount);
        // Older drivers do not know attribute 113 and return an error: treat as "not supported".
        int ro;
        ReadOnlyHostRegister = Driver.cuDeviceGetAttribute(&ro, CudaDriver.AttrReadOnlyHostRegisterSupported, Device) == 0 && ro != 0;
        nuint total;
        Driver.Check(Driver.cuDeviceTotalMem(&total, Device), "cuDeviceTotalMem");
        TotalMemory = (long)total;
        int version;
        Driver.Check(Driver.cuDriverGetVersion(&version), "cuDriverGetVersion");
        DriverVersion = version;
    }

    private void LoadKernels(Nvrtc nvrtc, string cacheDirectory)
    {
        string source = KernelSource.WithTuning(Options.KernelDefines);
        string key = KernelSource.CacheKey(source, Major, Minor, nvrtc.Version);
        string cubinPath = Path.Combine(cacheDirectory, key + ".cubin"), ptxPath = Path.Combine(cacheDirectory, key + ".ptx");
        byte[] image;
        if (File.Exists(cubinPath)) { image = File.ReadAllBytes(cubinPath); KernelOrigin = $"cached ({cubinPath})"; }
        else if (File.Exists(ptxPath)) { image = File.ReadAllBytes(ptxPath); KernelOrigin = $"cached ({ptxPath})"; }
        else
        {
            var (compiled, isCubin) = nvrtc.Compile(source, KernelSource.ProgramName, Major, Minor, ["--std=c++17"]);
            image = compiled;
            string path = isCubin ? cubinPath : ptxPath;
            KernelOrigin = $"compiled by {nvrtc.LibraryName} as {(isCubin ? "CUBIN" : "PTX")}";
            try
            {
                Directory.CreateDirectory(cacheDirectory);
                string temp = path + "." + Environment.ProcessId + ".tmp";
                File.WriteAllBytes(temp, image);
                File.Move(temp, path, overwrite: true); // atomic: a concurrent reader sees the old file or the whole new one
                KernelOrigin += $", cached at {path}";
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                KernelOrigin += $" (not cached: {e.Message})";
            }
        }
        nint module;
        fixed (byte* p = image) Driver.Check(Driver.cuModuleLoadData(&module, p), "cuModuleLoadData");
        foreach (string kernel in KernelSource.KernelNames())
        {
            byte[] name = Encoding.ASCII.GetBytes(kernel + "\0");
            nint f;
            fixed (byte* n = name) Driver.Check(Driver.cuModuleGetFunction(&f, module, n), $"cuModuleGetFunction({kernel})");
            _functions[kernel] = f;
        }
    }
}

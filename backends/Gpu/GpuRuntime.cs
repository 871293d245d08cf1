using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Gpu;

/// <summary>What a vendor binding found out about its device, in the shared code's terms.</summary>
/// <param name="Name">Marketing name (cuDeviceGetName, hipDeviceGetName).</param>
/// <param name="StableId">PCI bus id: the same device across runs.</param>
/// <param name="Target">Compile target: sm_90, gfx90a, gfx1151.</param>
/// <param name="Integrated">Shares the host's memory (an APU, Jetson): host import needs no bus.</param>
/// <param name="CanMapHostMemory">Host pages can be registered and read by kernels (the HostImport capability).</param>
/// <param name="ReadOnlyHostRegister">Imports ask for read-only registration (CUDA: where the device supports it; HIP: the option).</param>
/// <param name="Multiprocessors">SMs or compute units.</param>
/// <param name="TotalMemory">Device memory in bytes (on an integrated device, what the runtime reports).</param>
/// <param name="WarpSize">Hardware warp (32; 64 on gfx9/CDNA): the kernels' portability header gets it.</param>
/// <param name="ReadOnlyHostRegisterFallback">Where a plain registration is refused (pages mapped read-only), retry read-only (HIP).</param>
internal sealed record GpuDeviceFacts(string Name, string StableId, string Target, bool Integrated, bool CanMapHostMemory, bool ReadOnlyHostRegister,
                                      int Multiprocessors, long TotalMemory, int WarpSize, bool ReadOnlyHostRegisterFallback = false);

/// <summary>A vendor's run-time compiler (NVRTC, hiprtc) bound to one device's target.</summary>
internal interface IGpuKernelCompiler
{
    /// <summary>Library file loaded, for the probe description.</summary>
    string LibraryName { get; }

    /// <summary>Compiler version, part of the cache key.</summary>
    string Version { get; }

    /// <summary>Image file extensions the cache may hold for this target, most preferred first (cubin, ptx; hsaco).</summary>
    IReadOnlyList<string> ImageExtensions { get; }

    /// <summary>Compiles the translation unit; returns the image and its extension (one of <see cref="ImageExtensions"/>). Throws <see cref="KernelCompileException"/> with the log.</summary>
    (byte[] Image, string Extension) Compile(string source, string programName);
}

/// <summary>
/// Everything a probe set up for one GPU, vendor-neutral: the native binding, the device's facts, the options and the
/// loaded kernel module. The vendor plugin creates it (CudaRuntime, HipRuntime) and turns every failure into a reason.
/// </summary>
internal sealed class GpuRuntime
{
    private readonly Dictionary<string, nint> _functions = new(StringComparer.Ordinal);
    private readonly List<IGpuStepGraph> _stepGraphs = new();

    public GpuRuntime(IGpuNative native, GpuDeviceFacts facts, GpuKernelOptions options, bool programmaticLaunch)
    {
        Native = native;
        Facts = facts;
        Options = options;
        ProgrammaticLaunch = programmaticLaunch;
    }

    public IGpuNative Native { get; }

    public GpuDeviceFacts Facts { get; }

    /// <summary>Backend name ("cuda", "hip") for messages and environment variables.</summary>
    public string Backend => Native.Backend;

    public string Name => Facts.Name;

    /// <summary>Which kernels and paths queues use.</summary>
    public GpuKernelOptions Options { get; }

    /// <summary>Whether the int8 tensor-core matmuls (kernels.cu mmq_*) run: the <c>mma</c> option (CUDA only) on an sm_80 or later target.</summary>
    public bool IntegerMma => Options.IntegerMma && Facts.Target.StartsWith("sm_", StringComparison.Ordinal)
                              && int.TryParse(Facts.Target.AsSpan(3), out int arch) && arch >= 80;

    /// <summary>Whether prompts attend on the tensor cores (kernels.cu attention_mma_f16_d*): the <c>flash_attn</c> option (CUDA only) on an sm_80 or later target.</summary>
    public bool FlashAttention => Options.FlashAttention && Facts.Target.StartsWith("sm_", StringComparison.Ordinal)
                                  && int.TryParse(Facts.Target.AsSpan(3), out int arch) && arch >= 80;

    /// <summary>Whether kernels are launched with programmatic stream serialization (CUDA sm_90 with cuLaunchKernelEx and the option on).</summary>
    public bool ProgrammaticLaunch { get; }

    /// <summary>The vendor BLAS for the prompt path, or null (not wanted, not bound or not found: <see cref="BlasStatus"/> says which).</summary>
    public IGpuBlas? Blas { get; set; }

    /// <summary>What the prompt path runs on, for the probe description.</summary>
    public string BlasStatus { get; set; } = "";

    /// <summary>"compiled by ..." or "cached (...)", for the probe description.</summary>
    public string KernelOrigin { get; private set; } = "";

    /// <summary>
    /// Where free and total memory come from when the runtime's own figure is not the one to plan with (an integrated HIP
    /// device: the system's, see <see cref="SystemMemory"/>); null: the runtime's.
    /// </summary>
    public Func<(long Free, long Total)>? MemoryReport { get; set; }

    /// <summary>PLUGINENGINE_CUDA_PROFILE=1 / PLUGINENGINE_HIP_PROFILE=1: per-kernel GPU time (see <see cref="GpuOpProfile"/>).</summary>
    public bool ProfileRequested => Environment.GetEnvironmentVariable($"PLUGINENGINE_{Backend.ToUpperInvariant()}_PROFILE") == "1";

    /// <summary>PLUGINENGINE_CUDA_PROFILE=host / PLUGINENGINE_HIP_PROFILE=host: launch-call and wait times on the host (see <see cref="GpuHostProfile"/>).</summary>
    public bool HostProfileRequested => Environment.GetEnvironmentVariable($"PLUGINENGINE_{Backend.ToUpperInvariant()}_PROFILE") == "host";

    /// <summary>
    /// (index, count) when this runtime is one of several virtual devices of one GPU (docs/multi-gpu.md#two-devices-on-one-gpu);
    /// null for a plain GPU.
    /// </summary>
    public (int Index, int Count)? Virtual { get; set; }

    public void MakeCurrent() => Native.MakeCurrent();

    /// <summary>
    /// Free and total memory; a virtual device reports its share (1/N of the GPU's), so a split planned by free memory
    /// does not count the GPU's memory once per virtual device.
    /// </summary>
    public (long Free, long Total) QueryMemory()
    {
        (long free, long total) = MemoryReport is { } report ? report() : QueryNative();
        int share = Virtual?.Count ?? 1;
        return (free / share, total / share);
    }

    private (long Free, long Total) QueryNative()
    {
        MakeCurrent();
        return Native.QueryMemory();
    }

    /// <summary>A kernel of the loaded module.</summary>
    public nint Function(string name)
        => _functions.TryGetValue(name, out nint f) ? f : throw new InvalidOperationException($"{Backend}: kernel '{name}' is not in the module");

    /// <summary>A queue's step graph announces itself, so buffer work can launch what it recorded first (see <see cref="EnterBufferWork"/>).</summary>
    internal void AddStepGraph(IGpuStepGraph graph) { lock (_stepGraphs) _stepGraphs.Add(graph); }

    internal void RemoveStepGraph(IGpuStepGraph graph) { lock (_stepGraphs) _stepGraphs.Remove(graph); }

    /// <summary>
    /// Call before buffer work (uploads, memsets, downloads, frees), which runs on the default stream: queues' streams
    /// synchronize with that stream, and a kernel a step graph recorded but has not launched yet may read memory this work
    /// writes or frees. So what every step graph on this device recorded is launched first.
    /// </summary>
    internal void EnterBufferWork()
    {
        MakeCurrent();
        lock (_stepGraphs)
            foreach (var graph in _stepGraphs) graph.Flush();
    }

    /// <summary>
    /// Loads the kernels: from <paramref name="cacheDirectory"/> when an image of this source, target and compiler is there,
    /// else compiled (and cached, atomically). Throws <see cref="KernelCompileException"/>, <see cref="GpuException"/> or
    /// <see cref="IOException"/>, which the probes turn into reasons.
    /// </summary>
    public void LoadKernels(IGpuKernelCompiler compiler, string source, string cacheDirectory)
    {
        string key = KernelSource.CacheKey(source, Facts.Target, compiler.Version);
        byte[]? image = null;
        foreach (string extension in compiler.ImageExtensions)
        {
            string cached = Path.Combine(cacheDirectory, $"{key}.{extension}");
            if (!File.Exists(cached)) continue;
            image = File.ReadAllBytes(cached);
            KernelOrigin = $"cached ({cached})";
            break;
        }
        if (image is null)
        {
            var (compiled, extension) = compiler.Compile(source, KernelSource.ProgramName);
            image = compiled;
            string path = Path.Combine(cacheDirectory, $"{key}.{extension}");
            KernelOrigin = $"compiled by {compiler.LibraryName} as {extension.ToUpperInvariant()}";
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
        MakeCurrent();
        nint module = Native.LoadModule(image);
        foreach (string kernel in KernelSource.KernelNames()) _functions[kernel] = Native.GetFunction(module, kernel);
    }

    /// <summary>PLUGINENGINE_CACHE/&lt;backend&gt;, else $XDG_CACHE_HOME/pluginengine/&lt;backend&gt;, else ~/.cache/pluginengine/&lt;backend&gt;.</summary>
    public static string DefaultCacheDirectory(string backend)
    {
        if (Environment.GetEnvironmentVariable("PLUGINENGINE_CACHE") is { Length: > 0 } own) return Path.Combine(own, backend);
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        string root = string.IsNullOrEmpty(xdg) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache") : xdg;
        return Path.Combine(root, "pluginengine", backend);
    }
}

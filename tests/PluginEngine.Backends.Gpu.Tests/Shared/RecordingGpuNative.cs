using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// A native layer with no GPU behind it: it hands out fake handles and records, in one shared log, the calls the queue
/// tests look at (contexts, events, peer copies, and with <paramref name="logWork"/> the stream work: copies, memsets,
/// launches, waits). <paramref name="stepGraphs"/> stands in for the binding's step graphs.
/// </summary>
internal sealed unsafe class RecordingGpuNative(string name, List<string> log, bool peers, ulong baseAddress, bool logWork = false,
                                                Func<nint, IGpuStepGraph?>? stepGraphs = null) : IGpuNative
{
    private ulong _next = baseAddress;
    private nint _handles = (nint)(baseAddress >> 20);

    public string Backend => "cuda";
    public string ErrorName(int result) => $"error{result}";
    public int ErrorInvalidValue => 1;
    public void MakeCurrent() => log.Add($"{name}: current");
    public (long Free, long Total) QueryMemory() => (1L << 30, 2L << 30);
    public ulong Allocate(long bytes, string what) { ulong p = _next; _next += (ulong)TensorPadding.AlignUp(bytes, 256); return p; }
    public void Free(ulong pointer, string what) { }
    public void FreeQuietly(ulong pointer) { }
    public void* AllocatePinned(long bytes, string what) => (void*)Marshal.AllocHGlobal((nint)bytes);
    public void FreePinned(void* pointer) => Marshal.FreeHGlobal((nint)pointer);
    public int TryCopyHostToDevice(ulong destination, void* source, long bytes) => 0;
    public void CopyPinnedToDevice(ulong destination, void* source, long bytes, string what) { }
    public void CopyDeviceToHost(void* destination, ulong source, long bytes) { }
    public void CopyDeviceToDevice(ulong destination, ulong source, long bytes) { }
    public void MemsetAsync(ulong destination, byte value, long bytes, nint stream, string what) => Work($"memset {what}");
    public void CopyHostToDeviceAsync(ulong destination, void* source, long bytes, nint stream, string what) => Work($"copy to device: {what}");
    public void CopyDeviceToHostAsync(void* destination, ulong source, long bytes, nint stream) => Work("copy to host");
    public nint CreateStream() => ++_handles;
    public void SynchronizeStream(nint stream) => Work("wait for the stream");
    public void DestroyStreamQuietly(nint stream) => log.Add($"{name}: destroy stream {stream}");
    public string HostRegisterCall => "cuMemHostRegister";
    public int TryRegisterHost(void* host, long bytes, bool readOnly) => 1;
    public string RegistrationFlags(bool readOnly) => "";
    public int TryGetMappedPointer(void* host, out ulong devicePointer) { devicePointer = 0; return 1; }
    public void UnregisterHost(void* host) { }
    public void UnregisterHostQuietly(void* host) { }
    public nint LoadModule(byte[] image) => 1;

    /// <summary>Blocks of a kernel (by name) an SM holds at once, as cuOccupancyMaxActiveBlocksPerMultiprocessor would say; null or 0: not known.</summary>
    public Func<string, int>? BlocksPerSm { get; set; }

    public int MaxActiveBlocksPerMultiprocessor(nint function, int blockThreads) => BlocksPerSm?.Invoke(_functions.GetValueOrDefault(function, "?")) ?? 0;
    private readonly Dictionary<nint, string> _functions = [];

    /// <summary>Called with each launch's kernel name, geometry and arguments (valid only during the call), for tests that decode them.</summary>
    public LaunchObserver? OnLaunch { get; set; }

    public delegate void LaunchObserver(string kernel, Launch launch, void** args);

    public nint GetFunction(nint module, string function)
    {
        nint handle = _functions.Count + 1; // one handle per kernel name, so launches can be told apart
        foreach (var (h, n) in _functions) if (n == function) return h;
        _functions[handle] = function;
        return handle;
    }

    public void Launch(nint function, Launch launch, nint stream, void** args, bool programmatic, string what)
    {
        OnLaunch?.Invoke(_functions.GetValueOrDefault(function, "?"), launch, args);
        Work($"launch {what}");
    }
    public nint CreateEvent() { nint e = ++_handles; log.Add($"{name}: create event {e}"); return e; }
    public void RecordEvent(nint gpuEvent, nint stream) => log.Add($"{name}: record event {gpuEvent} on stream {stream}");
    public bool TryElapsedMilliseconds(nint start, nint end, out float milliseconds) { milliseconds = 0; return false; }
    public void DestroyEvent(nint gpuEvent) => log.Add($"{name}: destroy event {gpuEvent}");
    public IGpuStepGraph? CreateStepGraph(GpuRuntime runtime, nint stream) => stepGraphs?.Invoke(stream);
    public bool CanCopyToPeer(IGpuNative peer) => peers && peer is RecordingGpuNative { PeersEnabled: true };
    public bool PeersEnabled => peers;
    public bool TryCopyToPeerAsync(ulong destination, IGpuNative peer, ulong source, long bytes, nint stream)
    {
        log.Add($"{name}: peer copy {bytes} B from 0x{source:X} to 0x{destination:X} on {((RecordingGpuNative)peer).Name} via stream {stream}");
        return true;
    }
    public void StreamWaitEvent(nint stream, nint gpuEvent) => log.Add($"{name}: stream {stream} waits for event {gpuEvent}");
    public string Name => name;

    private void Work(string what)
    {
        if (logWork) log.Add($"{name}: {what}");
    }

    /// <summary>A device over a recording native layer, its kernels "compiled" by a fake compiler into <paramref name="cache"/>.</summary>
    public static (GpuDevice Device, RecordingGpuNative Native) Device(string name, List<string> log, bool peers, ulong baseAddress, string cache,
                                                                      GpuKernelOptions? options = null, bool logWork = false,
                                                                      Func<nint, IGpuStepGraph?>? stepGraphs = null, IGpuBlas? blas = null)
    {
        var native = new RecordingGpuNative(name, log, peers, baseAddress, logWork, stepGraphs);
        var facts = new GpuDeviceFacts("Test GPU", "0000:03:00.0", "sm_90", Integrated: false, CanMapHostMemory: false, ReadOnlyHostRegister: false,
                                       Multiprocessors: 40, TotalMemory: 2L << 30, WarpSize: 32);
        var runtime = new GpuRuntime(native, facts, options ?? GpuKernelOptions.Default with { BlasPrompt = false }, programmaticLaunch: false) { Blas = blas };
        runtime.LoadKernels(new FakeCompiler(), KernelSource.For(KernelDialect.Cuda, 32, ""), cache);
        return (new GpuDevice(runtime, "details"), native);
    }

    /// <summary>A vendor BLAS that records each GEMM (w, x, y addresses, shape) instead of running it.</summary>
    public sealed class RecordingBlas : IGpuBlas
    {
        public List<(ulong W, ulong X, ulong Y, int Rows, int Cols, int Tokens, bool F16, bool Accumulate)> Gemms { get; } = [];
        public string LibraryName => "recording";
        public nint CreateHandle(nint stream) => 1;
        public void DestroyHandle(nint handle) { }
        public void RowMajorMatMul(nint handle, ulong w, ulong x, ulong y, int rows, int cols, int tokens, bool f16, bool accumulate)
            => Gemms.Add((w, x, y, rows, cols, tokens, f16, accumulate));

        /// <summary>Batched products, recorded as one entry each: (w, x, y, rows, cols, tokens, count, w stride, y stride).</summary>
        public List<(ulong W, ulong X, ulong Y, int Rows, int Cols, int Tokens, int Count, long WStride, long YStride)> Batches { get; } = [];

        public void RowMajorMatMulBatched(nint handle, ulong w, long wStride, ulong x, ulong y, long yStride, int rows, int cols, int tokens, int count)
            => Batches.Add((w, x, y, rows, cols, tokens, count, wStride, yStride));
    }

    private sealed class FakeCompiler : IGpuKernelCompiler
    {
        public string LibraryName => "fake";
        public string Version => "1";
        public IReadOnlyList<string> ImageExtensions { get; } = ["cubin"];
        public (byte[] Image, string Extension) Compile(string source, string programName) => ([1, 2, 3], "cubin");
    }
}

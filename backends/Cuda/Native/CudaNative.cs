using System.Text;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Cuda.Native;

/// <summary>
/// The CUDA driver API behind the shared GPU code's native interface: one device's primary context, made current per
/// thread; device memory, pinned host memory, registration of host pages (DEVICEMAP, READ_ONLY on request), streams,
/// modules (CUBIN/PTX), launches (cuLaunchKernelEx with programmatic stream serialization where asked), events and graphs.
/// </summary>
internal sealed unsafe class CudaNative(CudaDriver driver, int device, nint context) : IGpuNative
{
    [ThreadStatic] private static nint t_currentContext;

    public CudaDriver Driver { get; } = driver;

    /// <summary>CUdevice handle.</summary>
    public int Device { get; } = device;

    /// <summary>The device's primary context.</summary>
    public nint Context { get; } = context;

    public string Backend => "cuda";

    public string ErrorName(int result) => Driver.ErrorName(result);

    public int ErrorInvalidValue => CudaDriver.ErrorInvalidValue;

    public void MakeCurrent()
    {
        if (t_currentContext == Context) return;
        Driver.Check(Driver.cuCtxSetCurrent(Context), "cuCtxSetCurrent");
        t_currentContext = Context;
    }

    public (long Free, long Total) QueryMemory()
    {
        nuint free, total;
        Driver.Check(Driver.cuMemGetInfo(&free, &total), "cuMemGetInfo");
        return ((long)free, (long)total);
    }

    public ulong Allocate(long bytes, string what)
    {
        ulong p;
        Driver.Check(Driver.cuMemAlloc(&p, (nuint)bytes), $"cuMemAlloc({bytes} B for {what})");
        return p;
    }

    public void Free(ulong pointer, string what) => Driver.Check(Driver.cuMemFree(pointer), $"cuMemFree ({what})");

    public void FreeQuietly(ulong pointer) => Driver.cuMemFree(pointer);

    public void* AllocatePinned(long bytes, string what)
    {
        void* p;
        Driver.Check(Driver.cuMemAllocHost(&p, (nuint)bytes), $"cuMemAllocHost({bytes} B {what})");
        return p;
    }

    public void FreePinned(void* pointer) => Driver.Check(Driver.cuMemFreeHost(pointer), "cuMemFreeHost");

    public int TryCopyHostToDevice(ulong destination, void* source, long bytes) => Driver.cuMemcpyHtoD(destination, source, (nuint)bytes);

    public void CopyPinnedToDevice(ulong destination, void* source, long bytes, string what)
        => Driver.Check(Driver.cuMemcpyHtoD(destination, source, (nuint)bytes), $"cuMemcpyHtoD ({what})");

    public void CopyDeviceToHost(void* destination, ulong source, long bytes)
        => Driver.Check(Driver.cuMemcpyDtoH(destination, source, (nuint)bytes), "cuMemcpyDtoH");

    public void CopyDeviceToDevice(ulong destination, ulong source, long bytes)
        => Driver.Check(Driver.cuMemcpyDtoD(destination, source, (nuint)bytes), "cuMemcpyDtoD");

    public void MemsetAsync(ulong destination, byte value, long bytes, nint stream, string what)
        => Driver.Check(Driver.cuMemsetD8Async(destination, value, (nuint)bytes, stream), $"cuMemsetD8Async ({what})");

    public void CopyHostToDeviceAsync(ulong destination, void* source, long bytes, nint stream, string what)
        => Driver.Check(Driver.cuMemcpyHtoDAsync(destination, source, (nuint)bytes, stream), $"cuMemcpyHtoDAsync ({what})");

    public void CopyDeviceToHostAsync(void* destination, ulong source, long bytes, nint stream)
        => Driver.Check(Driver.cuMemcpyDtoHAsync(destination, source, (nuint)bytes, stream), "cuMemcpyDtoHAsync");

    public nint CreateStream()
    {
        nint stream;
        // Flags 0 = a blocking stream: it waits for work on the legacy default stream.
        Driver.Check(Driver.cuStreamCreate(&stream, 0), "cuStreamCreate");
        return stream;
    }

    public void SynchronizeStream(nint stream) => Driver.Check(Driver.cuStreamSynchronize(stream), "cuStreamSynchronize");

    public void DestroyStreamQuietly(nint stream) => Driver.cuStreamDestroy(stream);

    public string HostRegisterCall => "cuMemHostRegister";

    public int TryRegisterHost(void* host, long bytes, bool readOnly)
        => Driver.cuMemHostRegister(host, (nuint)bytes, CudaDriver.HostRegisterDeviceMap | (readOnly ? CudaDriver.HostRegisterReadOnly : 0));

    public string RegistrationFlags(bool readOnly) => readOnly ? "DEVICEMAP|READ_ONLY" : "DEVICEMAP";

    public int TryGetMappedPointer(void* host, out ulong devicePointer)
    {
        ulong p;
        int r = Driver.cuMemHostGetDevicePointer(&p, host, 0);
        devicePointer = p;
        return r;
    }

    public void UnregisterHost(void* host) => Driver.Check(Driver.cuMemHostUnregister(host), "cuMemHostUnregister");

    public void UnregisterHostQuietly(void* host) => Driver.cuMemHostUnregister(host);

    public nint LoadModule(byte[] image)
    {
        nint module;
        fixed (byte* p = image) Driver.Check(Driver.cuModuleLoadData(&module, p), "cuModuleLoadData");
        return module;
    }

    public nint GetFunction(nint module, string name)
    {
        byte[] bytes = Encoding.ASCII.GetBytes(name + "\0");
        nint f;
        fixed (byte* n = bytes) Driver.Check(Driver.cuModuleGetFunction(&f, module, n), $"cuModuleGetFunction({name})");
        return f;
    }

    public int MaxActiveBlocksPerMultiprocessor(nint function, int blockThreads)
    {
        if (Driver.cuOccupancyMaxActiveBlocksPerMultiprocessor == null || function == 0) return 0;
        int blocks;
        return Driver.cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, function, blockThreads, 0) == 0 ? blocks : 0;
    }

    public void Launch(nint function, Launch launch, nint stream, void** args, bool programmatic, string what)
    {
        int r;
        if (programmatic)
        {
            var attribute = new CudaDriver.LaunchAttribute { Id = CudaDriver.LaunchAttributeProgrammaticStreamSerialization, Value = 1 };
            var config = new CudaDriver.LaunchConfig
            {
                GridX = launch.GridX, GridY = launch.GridY, GridZ = launch.GridZ, BlockX = launch.BlockX, BlockY = 1, BlockZ = 1,
                Stream = stream, Attributes = &attribute, AttributeCount = 1,
            };
            r = Driver.cuLaunchKernelEx(&config, function, args, null);
        }
        else r = Driver.cuLaunchKernel(function, launch.GridX, launch.GridY, launch.GridZ, launch.BlockX, 1, 1, 0, stream, args, null);
        if (r != 0) throw new GpuException($"cuLaunchKernel({what}, grid {launch.GridX}x{launch.GridY}x{launch.GridZ}, block {launch.BlockX})", r, Driver.ErrorName(r));
    }

    public nint CreateEvent()
    {
        nint e;
        Driver.Check(Driver.cuEventCreate(&e, 0), "cuEventCreate");
        return e;
    }

    public void RecordEvent(nint gpuEvent, nint stream) => Driver.Check(Driver.cuEventRecord(gpuEvent, stream), "cuEventRecord");

    public bool TryElapsedMilliseconds(nint start, nint end, out float milliseconds)
    {
        float ms;
        bool ok = Driver.cuEventElapsedTime(&ms, start, end) == 0;
        milliseconds = ms;
        return ok;
    }

    public void DestroyEvent(nint gpuEvent) => Driver.cuEventDestroy(gpuEvent);

    public IGpuStepGraph? CreateStepGraph(GpuRuntime runtime, nint stream) => Driver.HasGraphs ? new CudaStepGraph(runtime, this, stream) : null;

    /// <summary>Peers this context has asked for access to (once per peer context).</summary>
    private readonly HashSet<nint> _peersTried = [];

    /// <summary>
    /// cuMemcpyPeerAsync between this context and <paramref name="peer"/>'s: the driver copies directly over the bus (NVLink,
    /// PCIe peer-to-peer) where peer access is enabled, and stages through host memory itself where it is not; two contexts
    /// of one GPU (virtual devices) copy within the device. Peer access is enabled once per peer where cuDeviceCanAccessPeer
    /// allows (docs/multi-gpu.md#transfers). The caller has made this context current.
    /// </summary>
    public bool CanCopyToPeer(IGpuNative peer) => peer is CudaNative && Driver.HasPeerCopies;

    public bool TryCopyToPeerAsync(ulong destination, IGpuNative peer, ulong source, long bytes, nint stream)
    {
        if (peer is not CudaNative other || !Driver.HasPeerCopies) return false;
        if (other.Device != Device && _peersTried.Add(other.Context) && Driver.cuDeviceCanAccessPeer != null && Driver.cuCtxEnablePeerAccess != null)
        {
            int can = 0;
            if (Driver.cuDeviceCanAccessPeer(&can, Device, other.Device) == 0 && can != 0)
            {
                int r = Driver.cuCtxEnablePeerAccess(other.Context, 0);
                if (r != 0 && r != CudaDriver.ErrorPeerAccessAlreadyEnabled) Driver.Check(r, "cuCtxEnablePeerAccess");
            }
        }
        Driver.Check(Driver.cuMemcpyPeerAsync(destination, other.Context, source, Context, (nuint)bytes, stream), $"cuMemcpyPeerAsync ({bytes} B)");
        return true;
    }

    public void StreamWaitEvent(nint stream, nint gpuEvent) => Driver.Check(Driver.cuStreamWaitEvent(stream, gpuEvent, 0), "cuStreamWaitEvent");

    /// <summary>
    /// A new context on <paramref name="device"/> (a virtual device's own, docs/multi-gpu.md#two-devices-on-one-gpu), taken
    /// off this thread's context stack again (cuCtxCreate pushes it): queues make it current where they run. It lives as
    /// long as the process, like the primary context: the buffers and streams in it are released first, by their owners.
    /// </summary>
    public static nint CreateContext(CudaDriver driver, int device)
    {
        if ((driver.cuCtxCreate == null && driver.cuCtxCreateV4 == null) || driver.cuCtxPopCurrent == null)
            throw new GpuException("cuCtxCreate_v2/cuCtxPopCurrent_v2 (virtual devices)", 500, "CUDA_ERROR_NOT_FOUND");
        nint context, popped;
        if (driver.cuCtxCreate != null) driver.Check(driver.cuCtxCreate(&context, 0, device), "cuCtxCreate_v2");
        else driver.Check(driver.cuCtxCreateV4(&context, null, 0, device), "cuCtxCreate_v4"); // no creation parameters: as _v2
        driver.Check(driver.cuCtxPopCurrent(&popped), "cuCtxPopCurrent");
        t_currentContext = 0; // the thread's current context changed behind MakeCurrent's back: set it again next time
        return context;
    }
}

/// <summary>NVRTC bound to one compute capability, for <see cref="GpuRuntime.LoadKernels"/>.</summary>
internal sealed class NvrtcKernelCompiler(Nvrtc nvrtc, int major, int minor) : IGpuKernelCompiler
{
    public string LibraryName => nvrtc.LibraryName;

    public string Version => nvrtc.Version;

    public IReadOnlyList<string> ImageExtensions { get; } = ["cubin", "ptx"];

    public (byte[] Image, string Extension) Compile(string source, string programName)
    {
        var (image, isCubin) = nvrtc.Compile(source, programName, major, minor, ["--std=c++17"]);
        return (image, isCubin ? "cubin" : "ptx");
    }
}

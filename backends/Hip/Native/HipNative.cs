using System.Text;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Hip.Native;

/// <summary>
/// The HIP runtime behind the shared GPU code's native interface: one device, made current per thread with hipSetDevice;
/// hipMalloc'd memory, pinned host memory, registration of host pages (Mapped, ReadOnly on request), blocking streams
/// (they wait for the null stream, as CUDA's do for the legacy default stream), code objects, launches and events.
/// No step graphs and no programmatic launch.
/// </summary>
internal sealed unsafe class HipNative(HipApi api, int device) : IGpuNative
{
    [ThreadStatic] private static int t_currentDevicePlusOne;

    public HipApi Api { get; } = api;

    public int Device { get; } = device;

    public string Backend => "hip";

    public string ErrorName(int result) => Api.ErrorName(result);

    public int ErrorInvalidValue => HipApi.ErrorInvalidValue;

    public void MakeCurrent()
    {
        if (t_currentDevicePlusOne == Device + 1) return;
        Api.Check(Api.hipSetDevice(Device), "hipSetDevice");
        t_currentDevicePlusOne = Device + 1;
    }

    public (long Free, long Total) QueryMemory()
    {
        nuint free, total;
        Api.Check(Api.hipMemGetInfo(&free, &total), "hipMemGetInfo");
        return ((long)free, (long)total);
    }

    public ulong Allocate(long bytes, string what)
    {
        ulong p;
        Api.Check(Api.hipMalloc(&p, (nuint)bytes), $"hipMalloc({bytes} B for {what})");
        return p;
    }

    public void Free(ulong pointer, string what) => Api.Check(Api.hipFree(pointer), $"hipFree ({what})");

    public void FreeQuietly(ulong pointer) => Api.hipFree(pointer);

    public void* AllocatePinned(long bytes, string what)
    {
        void* p;
        Api.Check(Api.hipHostMalloc(&p, (nuint)bytes, 0), $"hipHostMalloc({bytes} B {what})");
        return p;
    }

    public void FreePinned(void* pointer) => Api.Check(Api.hipHostFree(pointer), "hipHostFree");

    public int TryCopyHostToDevice(ulong destination, void* source, long bytes) => Api.hipMemcpyHtoD(destination, source, (nuint)bytes);

    public void CopyPinnedToDevice(ulong destination, void* source, long bytes, string what)
        => Api.Check(Api.hipMemcpyHtoD(destination, source, (nuint)bytes), $"hipMemcpyHtoD ({what})");

    public void CopyDeviceToHost(void* destination, ulong source, long bytes)
        => Api.Check(Api.hipMemcpyDtoH(destination, source, (nuint)bytes), "hipMemcpyDtoH");

    public void CopyDeviceToDevice(ulong destination, ulong source, long bytes)
        => Api.Check(Api.hipMemcpyDtoD(destination, source, (nuint)bytes), "hipMemcpyDtoD");

    public void MemsetAsync(ulong destination, byte value, long bytes, nint stream, string what)
        => Api.Check(Api.hipMemsetD8Async(destination, value, (nuint)bytes, stream), $"hipMemsetD8Async ({what})");

    public void CopyHostToDeviceAsync(ulong destination, void* source, long bytes, nint stream, string what)
        => Api.Check(Api.hipMemcpyHtoDAsync(destination, source, (nuint)bytes, stream), $"hipMemcpyHtoDAsync ({what})");

    public void CopyDeviceToHostAsync(void* destination, ulong source, long bytes, nint stream)
        => Api.Check(Api.hipMemcpyDtoHAsync(destination, source, (nuint)bytes, stream), "hipMemcpyDtoHAsync");

    public nint CreateStream()
    {
        nint stream;
        // hipStreamDefault (0): a blocking stream, which waits for the null stream where buffer uploads and slide fills go.
        Api.Check(Api.hipStreamCreateWithFlags(&stream, 0), "hipStreamCreateWithFlags");
        return stream;
    }

    public void SynchronizeStream(nint stream) => Api.Check(Api.hipStreamSynchronize(stream), "hipStreamSynchronize");

    public void DestroyStreamQuietly(nint stream) => Api.hipStreamDestroy(stream);

    public string HostRegisterCall => "hipHostRegister";

    public int TryRegisterHost(void* host, long bytes, bool readOnly)
        => Api.hipHostRegister(host, (nuint)bytes, HipApi.HostRegisterMapped | (readOnly ? HipApi.HostRegisterReadOnly : 0));

    public string RegistrationFlags(bool readOnly) => readOnly ? "Mapped|ReadOnly" : "Mapped";

    public int TryGetMappedPointer(void* host, out ulong devicePointer)
    {
        ulong p;
        int r = Api.hipHostGetDevicePointer(&p, host, 0);
        devicePointer = p;
        return r;
    }

    public void UnregisterHost(void* host) => Api.Check(Api.hipHostUnregister(host), "hipHostUnregister");

    public void UnregisterHostQuietly(void* host) => Api.hipHostUnregister(host);

    public nint LoadModule(byte[] image)
    {
        nint module;
        fixed (byte* p = image) Api.Check(Api.hipModuleLoadData(&module, p), "hipModuleLoadData");
        return module;
    }

    public nint GetFunction(nint module, string name)
    {
        byte[] bytes = Encoding.ASCII.GetBytes(name + "\0");
        nint f;
        fixed (byte* n = bytes) Api.Check(Api.hipModuleGetFunction(&f, module, n), $"hipModuleGetFunction({name})");
        return f;
    }

    public void Launch(nint function, Launch launch, nint stream, void** args, bool programmatic, string what)
    {
        int r = Api.hipModuleLaunchKernel(function, launch.GridX, launch.GridY, launch.GridZ, launch.BlockX, 1, 1, 0, stream, args, null);
        if (r != 0) throw new GpuException($"hipModuleLaunchKernel({what}, grid {launch.GridX}x{launch.GridY}x{launch.GridZ}, block {launch.BlockX})", r, Api.ErrorName(r));
    }

    public nint CreateEvent()
    {
        nint e;
        Api.Check(Api.hipEventCreate(&e), "hipEventCreate");
        return e;
    }

    public void RecordEvent(nint gpuEvent, nint stream) => Api.Check(Api.hipEventRecord(gpuEvent, stream), "hipEventRecord");

    public bool TryElapsedMilliseconds(nint start, nint end, out float milliseconds)
    {
        float ms;
        bool ok = Api.hipEventElapsedTime(&ms, start, end) == 0;
        milliseconds = ms;
        return ok;
    }

    public void DestroyEvent(nint gpuEvent) => Api.hipEventDestroy(gpuEvent);

    /// <summary>HIP has graphs, but the queue's per-step capture was measured slower than direct launches on CUDA and is not offered here.</summary>
    public IGpuStepGraph? CreateStepGraph(GpuRuntime runtime, nint stream) => null;

    /// <summary>
    /// hipMemcpyPeerAsync to <paramref name="peer"/>'s device (direct where the devices have peer access, staged by the
    /// runtime where not; within the device for two virtual devices of one GPU). See docs/multi-gpu.md#transfers.
    /// </summary>
    public bool CanCopyToPeer(IGpuNative peer) => peer is HipNative && Api.hipMemcpyPeerAsync != null && Api.hipStreamWaitEvent != null;

    public bool TryCopyToPeerAsync(ulong destination, IGpuNative peer, ulong source, long bytes, nint stream)
    {
        if (peer is not HipNative other || Api.hipMemcpyPeerAsync == null || Api.hipStreamWaitEvent == null) return false;
        Api.Check(Api.hipMemcpyPeerAsync(destination, other.Device, source, Device, (nuint)bytes, stream), $"hipMemcpyPeerAsync ({bytes} B)");
        return true;
    }

    public void StreamWaitEvent(nint stream, nint gpuEvent) => Api.Check(Api.hipStreamWaitEvent(stream, gpuEvent, 0), "hipStreamWaitEvent");
}

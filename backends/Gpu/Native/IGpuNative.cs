using PluginEngine.Backends.Gpu.Kernels;

namespace PluginEngine.Backends.Gpu.Native;

/// <summary>A GPU runtime call failed; the message names the call and the vendor's error.</summary>
public sealed class GpuException(string call, int result, string name)
    : Exception($"{call} failed: {name} ({result})")
{
    /// <summary>The runtime function that failed.</summary>
    public string Call { get; } = call;

    /// <summary>The error code it returned (CUresult, hipError_t).</summary>
    public int Result { get; } = result;
}

/// <summary>The run-time compiler (NVRTC, hiprtc) could not compile the kernels; the message carries the compiler log.</summary>
public sealed class KernelCompileException(string message) : Exception(message);

/// <summary>
/// The one small native interface a GPU vendor's binding implements (CUDA driver API + NVRTC + cuBLAS; HIP runtime +
/// hiprtc): memory, copies, host registration, streams, modules, launches and events. Everything above it (buffers,
/// the compute queue and its fused ops, kernel source assembly and launch geometry, options, profiling) is shared; see
/// docs/hip.md#one-gpu-code-base. Methods that can fail throw <see cref="GpuException"/> naming the vendor's call, except
/// those returning a raw result code, which callers must interpret (fallbacks, probe reasons).
/// </summary>
internal unsafe interface IGpuNative
{
    /// <summary>Backend name used in messages ("cuda", "hip").</summary>
    string Backend { get; }

    /// <summary>The vendor's error name of a result code (CUDA_ERROR_INVALID_VALUE, hipErrorInvalidValue).</summary>
    string ErrorName(int result);

    /// <summary>The result code of an invalid argument (both vendors: 1); the owned buffers' upload fallback tests for it.</summary>
    int ErrorInvalidValue { get; }

    /// <summary>Makes the device current on the calling thread (cheap when it already is).</summary>
    void MakeCurrent();

    /// <summary>Free and total device memory as the runtime reports it.</summary>
    (long Free, long Total) QueryMemory();

    ulong Allocate(long bytes, string what);
    void Free(ulong pointer, string what);
    /// <summary>Free without throwing (disposal paths).</summary>
    void FreeQuietly(ulong pointer);
    void* AllocatePinned(long bytes, string what);
    void FreePinned(void* pointer);

    /// <summary>Synchronous host-to-device copy; returns the raw result (see <see cref="ErrorInvalidValue"/>).</summary>
    int TryCopyHostToDevice(ulong destination, void* source, long bytes);
    void CopyPinnedToDevice(ulong destination, void* source, long bytes, string what);
    void CopyDeviceToHost(void* destination, ulong source, long bytes);
    void CopyDeviceToDevice(ulong destination, ulong source, long bytes);

    /// <summary>Asynchronous byte fill on <paramref name="stream"/> (0: the default stream, which queue streams wait for).</summary>
    void MemsetAsync(ulong destination, byte value, long bytes, nint stream, string what);
    void CopyHostToDeviceAsync(ulong destination, void* source, long bytes, nint stream, string what);
    void CopyDeviceToHostAsync(void* destination, ulong source, long bytes, nint stream);

    /// <summary>A stream that waits for work on the default stream (uploads and slide memsets go there).</summary>
    nint CreateStream();
    void SynchronizeStream(nint stream);
    /// <summary>Synchronize and destroy without throwing (disposal paths).</summary>
    void DestroyStreamQuietly(nint stream);

    /// <summary>The vendor's name of the host registration call, for messages (cuMemHostRegister, hipHostRegister).</summary>
    string HostRegisterCall { get; }

    /// <summary>Registers host pages for device access (mapped; read-only when asked); returns the raw result.</summary>
    int TryRegisterHost(void* host, long bytes, bool readOnly);
    /// <summary>Flags of a registration, for diagnostics ("DEVICEMAP|READ_ONLY", "Mapped").</summary>
    string RegistrationFlags(bool readOnly);
    /// <summary>The device address of registered host pages; returns the raw result.</summary>
    int TryGetMappedPointer(void* host, out ulong devicePointer);
    void UnregisterHost(void* host);
    void UnregisterHostQuietly(void* host);

    /// <summary>Loads a compiled image (CUBIN/PTX, AMDGPU code object) and returns the module.</summary>
    nint LoadModule(byte[] image);
    nint GetFunction(nint module, string name);

    /// <summary>Blocks of <paramref name="blockThreads"/> threads of <paramref name="function"/> one multiprocessor holds at once
    /// (registers and shared memory allowing); 0 where the binding cannot ask (default).</summary>
    int MaxActiveBlocksPerMultiprocessor(nint function, int blockThreads) => 0;

    /// <summary>Launches <paramref name="function"/>; <paramref name="programmatic"/> asks for programmatic dependent launch (CUDA sm_90).</summary>
    void Launch(nint function, Launch launch, nint stream, void** args, bool programmatic, string what);

    nint CreateEvent();
    void RecordEvent(nint gpuEvent, nint stream);
    bool TryElapsedMilliseconds(nint start, nint end, out float milliseconds);
    void DestroyEvent(nint gpuEvent);

    /// <summary>A step graph recorder for <paramref name="stream"/>, or null where the binding has none (HIP).</summary>
    IGpuStepGraph? CreateStepGraph(GpuRuntime runtime, nint stream);

    /// <summary>
    /// Enqueues on <paramref name="stream"/> (this binding's) a copy of <paramref name="bytes"/> from <paramref name="source"/>
    /// (this binding's device memory) to <paramref name="destination"/> in <paramref name="peer"/>'s device memory (another
    /// context or device of the same vendor), directly where the devices allow peer access and through the driver's own
    /// staging where not. False, having enqueued nothing, when the binding cannot (another vendor, entry points missing).
    /// See docs/multi-gpu.md#transfers.
    /// </summary>
    bool TryCopyToPeerAsync(ulong destination, IGpuNative peer, ulong source, long bytes, nint stream) => false;

    /// <summary>Whether <see cref="TryCopyToPeerAsync"/> and <see cref="StreamWaitEvent"/> work towards <paramref name="peer"/> (same vendor, entry points bound).</summary>
    bool CanCopyToPeer(IGpuNative peer) => false;

    /// <summary>Makes later work on <paramref name="stream"/> wait for <paramref name="gpuEvent"/> (which may belong to another context or device).</summary>
    void StreamWaitEvent(nint stream, nint gpuEvent) => throw new NotSupportedException($"{Backend}: waiting for another stream's event is not bound");
}

/// <summary>
/// Records a queue's kernels instead of launching them and runs them as graphs (CUDA's CudaStepGraph;
/// docs/gpu-kernels.md#step-graphs). Recording defers work, so the queue calls <see cref="Flush"/> before any other stream
/// work, before the host waits for the stream, and before work that frees or replaces memory a recorded kernel may use.
/// </summary>
internal unsafe interface IGpuStepGraph : IDisposable
{
    /// <summary>Takes a kernel launch into the step (its arguments are copied); false: the caller launches it live.</summary>
    bool TryRecord(nint function, Launch launch, void** args);

    /// <summary>Launches what was recorded, on the queue's stream, in order.</summary>
    void Flush();

    /// <summary>The host is about to wait for the stream: flushes; the next kernels start a new step.</summary>
    void EndStep();

    /// <summary>Flushes, and records nothing more until <see cref="EndStep"/> (before work that runs live, e.g. cuBLAS).</summary>
    void SuspendUntilStepEnd();
}

/// <summary>Matrix product on a vendor BLAS (cuBLAS) for the prompt path; optional.</summary>
internal interface IGpuBlas
{
    string LibraryName { get; }
    nint CreateHandle(nint stream);
    void DestroyHandle(nint handle);

    /// <summary>y[t, r] = Σ_c w[r, c] · x[t, c] (row-major w [rows, cols], x [tokens, cols], y [tokens, rows] F32); w and x are both F16 or both F32.</summary>
    void RowMajorMatMul(nint handle, ulong w, ulong x, ulong y, int rows, int cols, int tokens, bool f16, bool accumulate);

    /// <summary>
    /// <paramref name="count"/> such products in one call, F16 in, F32 out, none accumulating: product i multiplies the same x by
    /// w + i·<paramref name="wStride"/> into y + i·<paramref name="yStride"/> (strides in elements).
    /// </summary>
    void RowMajorMatMulBatched(nint handle, ulong w, long wStride, ulong x, ulong y, long yStride, int rows, int cols, int tokens, int count);
}

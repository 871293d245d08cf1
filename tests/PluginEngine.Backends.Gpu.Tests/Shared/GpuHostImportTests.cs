using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;
using PluginEngine.Core.Memory;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// The shared buffers' host import over a scripted native layer (no GPU): which registrations each vendor asks for and
/// in what order, what a refusal says, and that an imported range is never written (no init path, no upload, no fill).
/// </summary>
public sealed unsafe class GpuHostImportTests
{
    /// <summary>Records registrations; refuses those <see cref="Refuse"/> says; every other call is unexpected here.</summary>
    private sealed class ScriptedNative(string backend) : IGpuNative
    {
        public Func<bool, int> Refuse { get; set; } = _ => 0;
        public List<string> Calls { get; } = [];
        public const ulong MappedBase = 0x7000_0000_0000;

        public string Backend => backend;
        public string ErrorName(int result) => $"error{result}";
        public int ErrorInvalidValue => 1;
        public void MakeCurrent() { }
        public (long Free, long Total) QueryMemory() => (1L << 30, 2L << 30);
        public string HostRegisterCall => backend == "hip" ? "hipHostRegister" : "cuMemHostRegister";
        public string RegistrationFlags(bool readOnly) => readOnly ? "RO" : "RW";

        public int TryRegisterHost(void* host, long bytes, bool readOnly)
        {
            Calls.Add($"register {(readOnly ? "RO" : "RW")} {bytes}");
            return Refuse(readOnly);
        }

        public int TryGetMappedPointer(void* host, out ulong devicePointer)
        {
            Calls.Add("device pointer");
            devicePointer = MappedBase;
            return 0;
        }

        public void UnregisterHost(void* host) => Calls.Add("unregister");
        public void UnregisterHostQuietly(void* host) => Calls.Add("unregister (quietly)");

        private static Exception Unexpected(string what) => new Xunit.Sdk.XunitException($"unexpected native call: {what}");
        public ulong Allocate(long bytes, string what) => throw Unexpected("Allocate");
        public void Free(ulong pointer, string what) => throw Unexpected("Free");
        public void FreeQuietly(ulong pointer) => throw Unexpected("FreeQuietly");
        public void* AllocatePinned(long bytes, string what) => throw Unexpected("AllocatePinned");
        public void FreePinned(void* pointer) => throw Unexpected("FreePinned");
        public int TryCopyHostToDevice(ulong destination, void* source, long bytes) => throw Unexpected("TryCopyHostToDevice");
        public void CopyPinnedToDevice(ulong destination, void* source, long bytes, string what) => throw Unexpected("CopyPinnedToDevice");
        public void CopyDeviceToHost(void* destination, ulong source, long bytes) => throw Unexpected("CopyDeviceToHost");
        public void CopyDeviceToDevice(ulong destination, ulong source, long bytes) => throw Unexpected("CopyDeviceToDevice");
        public void MemsetAsync(ulong destination, byte value, long bytes, nint stream, string what) => throw Unexpected("MemsetAsync");
        public void CopyHostToDeviceAsync(ulong destination, void* source, long bytes, nint stream, string what) => throw Unexpected("CopyHostToDeviceAsync");
        public void CopyDeviceToHostAsync(void* destination, ulong source, long bytes, nint stream) => throw Unexpected("CopyDeviceToHostAsync");
        public nint CreateStream() => throw Unexpected("CreateStream");
        public void SynchronizeStream(nint stream) => throw Unexpected("SynchronizeStream");
        public void DestroyStreamQuietly(nint stream) => throw Unexpected("DestroyStreamQuietly");
        public nint LoadModule(byte[] image) => throw Unexpected("LoadModule");
        public nint GetFunction(nint module, string name) => throw Unexpected("GetFunction");
        public void Launch(nint function, Launch launch, nint stream, void** args, bool programmatic, string what) => throw Unexpected("Launch");
        public nint CreateEvent() => throw Unexpected("CreateEvent");
        public void RecordEvent(nint gpuEvent, nint stream) => throw Unexpected("RecordEvent");
        public bool TryElapsedMilliseconds(nint start, nint end, out float milliseconds) => throw Unexpected("TryElapsedMilliseconds");
        public void DestroyEvent(nint gpuEvent) => throw Unexpected("DestroyEvent");
        public IGpuStepGraph? CreateStepGraph(GpuRuntime runtime, nint stream) => null;
    }

    private static (GpuDevice Device, ScriptedNative Native) Device(string backend, bool readOnlyFirst, bool readOnlyFallback, bool integrated)
    {
        var native = new ScriptedNative(backend);
        var facts = new GpuDeviceFacts("Test GPU", "0000:03:00.0", backend == "hip" ? "gfx1151" : "sm_90", integrated, CanMapHostMemory: true,
                                       ReadOnlyHostRegister: readOnlyFirst, Multiprocessors: 40, TotalMemory: 2L << 30, WarpSize: 32,
                                       ReadOnlyHostRegisterFallback: readOnlyFallback);
        return (new GpuDevice(new GpuRuntime(native, facts, GpuKernelOptions.Default, programmaticLaunch: false), "details"), native);
    }

    [Fact]
    public void Hip_registers_plain_first_and_retries_read_only_where_the_pages_refuse()
    {
        var (device, native) = Device("hip", readOnlyFirst: false, readOnlyFallback: true, integrated: true);
        native.Refuse = readOnly => readOnly ? 0 : 1; // a read-only file mapping: only a read-only registration takes it
        using var mapping = AnonymousMapping.Create("/models/import.gguf", 4 * 4096, hugePages: false);
        var result = device.Buffers.TryImportHost("blk.0", mapping.AcquireLease(4096, 8192, "hip:0 import blk.0"));

        Assert.True(result.Succeeded, result.RefusalReason);
        Assert.Equal(["register RW 8192", "register RO 8192", "device pointer"], native.Calls);
        using var buffer = result.Buffer!;
        Assert.Equal(BufferOwnership.Imported, buffer.Ownership);
        Assert.Equal(ScriptedNative.MappedBase, (ulong)buffer.DeviceAddress); // the runtime's pointer, not the host address
        Assert.Equal(DeviceKind.IntegratedGpu, device.Description.Kind);
        Assert.True(device.Description.Capabilities.HasFlag(BackendCapabilities.HostImport));
    }

    [Fact]
    public void Hip_with_writable_pages_registers_once_without_the_read_only_flag()
    {
        var (device, native) = Device("hip", readOnlyFirst: false, readOnlyFallback: true, integrated: true);
        using var mapping = AnonymousMapping.Create("/models/import.gguf", 2 * 4096, hugePages: false);
        using var buffer = device.Buffers.TryImportHost("blk.0", mapping.AcquireLease(0, 8192, "hip:0 import blk.0")).Buffer!;
        Assert.Equal(["register RW 8192", "device pointer"], native.Calls);
    }

    [Fact]
    public void Cuda_registers_read_only_first_and_falls_back_to_plain()
    {
        var (device, native) = Device("cuda", readOnlyFirst: true, readOnlyFallback: false, integrated: false);
        native.Refuse = readOnly => readOnly ? 801 : 0;
        using var mapping = AnonymousMapping.Create("/models/import.gguf", 2 * 4096, hugePages: false);
        using var buffer = device.Buffers.TryImportHost("blk.0", mapping.AcquireLease(0, 4096, "cuda:0 import blk.0")).Buffer!;
        Assert.Equal(["register RO 4096", "register RW 4096", "device pointer"], native.Calls);
        Assert.Equal(DeviceKind.DiscreteGpu, device.Description.Kind);
    }

    [Fact]
    public void A_refused_import_names_the_call_the_range_and_the_runtimes_error()
    {
        var (device, native) = Device("hip", readOnlyFirst: false, readOnlyFallback: true, integrated: true);
        native.Refuse = _ => 1;
        using var mapping = AnonymousMapping.Create("/models/import.gguf", 2 * 4096, hugePages: false);
        using var lease = mapping.AcquireLease(4096, 4096, "hip:0 import blk.0"); // a refused lease stays the caller's to release
        var result = device.Buffers.TryImportHost("blk.0", lease);
        Assert.False(result.Succeeded);
        Assert.Equal("hipHostRegister(4096 B at offset 4096 of /models/import.gguf): error1", result.RefusalReason);
    }

    [Fact]
    public void An_imported_range_is_never_written_and_unregisters_on_release()
    {
        var (device, native) = Device("hip", readOnlyFirst: false, readOnlyFallback: true, integrated: true);
        using var mapping = AnonymousMapping.Create("/models/import.gguf", 2 * 4096, hugePages: false);
        var buffer = device.Buffers.TryImportHost("blk.0", mapping.AcquireLease(0, 8192, "hip:0 import blk.0")).Buffer!;
        var tensor = new TensorInfo("blk.0.attn_q.weight", GgmlType.Q4_0, [768, 4]);
        // The slide lies in the mapping's own zeros (the loader checked): InitTensor must not touch the device (the
        // scripted native throws on any memset or copy).
        buffer.InitTensor(tensor, 0, device.Buffers.GetAllocSize(tensor));
        Assert.Throws<ImportedBufferWriteException>(() => buffer.Upload(0, new byte[16]));
        Assert.Throws<ImportedBufferWriteException>(() => buffer.Memset(0, 16, 0));
        buffer.Dispose();
        Assert.Equal("unregister", native.Calls[^1]);
    }
}

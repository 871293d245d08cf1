using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// The GPU queue's copy into another device's queue (docs/multi-gpu.md#transfers) over a recording native layer (no GPU):
/// which calls in which context and stream, in what order — the destination stream's earlier work first, the peer copy
/// between the right pointers, the destination's later work after it — and that a peer the binding cannot reach gets
/// nothing at all (the core then copies through host memory).
/// </summary>
public sealed unsafe class GpuPeerCopyTests : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("pe-peer-").FullName;

    public void Dispose() => Directory.Delete(_cache, true);

    /// <summary>A native layer that hands out fake handles and records, in one shared log, every call that matters here.</summary>
    private sealed class RecordingNative(string name, List<string> log, bool peers, ulong baseAddress) : IGpuNative
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
        public void MemsetAsync(ulong destination, byte value, long bytes, nint stream, string what) { }
        public void CopyHostToDeviceAsync(ulong destination, void* source, long bytes, nint stream, string what) { }
        public void CopyDeviceToHostAsync(void* destination, ulong source, long bytes, nint stream) { }
        public nint CreateStream() => ++_handles;
        public void SynchronizeStream(nint stream) { }
        public void DestroyStreamQuietly(nint stream) => log.Add($"{name}: destroy stream {stream}");
        public string HostRegisterCall => "cuMemHostRegister";
        public int TryRegisterHost(void* host, long bytes, bool readOnly) => 1;
        public string RegistrationFlags(bool readOnly) => "";
        public int TryGetMappedPointer(void* host, out ulong devicePointer) { devicePointer = 0; return 1; }
        public void UnregisterHost(void* host) { }
        public void UnregisterHostQuietly(void* host) { }
        public nint LoadModule(byte[] image) => 1;
        public nint GetFunction(nint module, string function) => 1;
        public void Launch(nint function, Launch launch, nint stream, void** args, bool programmatic, string what) { }
        public nint CreateEvent() { nint e = ++_handles; log.Add($"{name}: create event {e}"); return e; }
        public void RecordEvent(nint gpuEvent, nint stream) => log.Add($"{name}: record event {gpuEvent} on stream {stream}");
        public bool TryElapsedMilliseconds(nint start, nint end, out float milliseconds) { milliseconds = 0; return false; }
        public void DestroyEvent(nint gpuEvent) => log.Add($"{name}: destroy event {gpuEvent}");
        public IGpuStepGraph? CreateStepGraph(GpuRuntime runtime, nint stream) => null;
        public bool CanCopyToPeer(IGpuNative peer) => peers && peer is RecordingNative { PeersEnabled: true };
        public bool PeersEnabled => peers;
        public bool TryCopyToPeerAsync(ulong destination, IGpuNative peer, ulong source, long bytes, nint stream)
        {
            log.Add($"{name}: peer copy {bytes} B from 0x{source:X} to 0x{destination:X} on {((RecordingNative)peer).Name} via stream {stream}");
            return true;
        }
        public void StreamWaitEvent(nint stream, nint gpuEvent) => log.Add($"{name}: stream {stream} waits for event {gpuEvent}");
        public string Name => name;
    }

    private (GpuDevice Device, RecordingNative Native) Device(string name, List<string> log, bool peers, ulong baseAddress)
    {
        var native = new RecordingNative(name, log, peers, baseAddress);
        var facts = new GpuDeviceFacts("Test GPU", "0000:03:00.0", "sm_90", Integrated: false, CanMapHostMemory: false, ReadOnlyHostRegister: false,
                                       Multiprocessors: 40, TotalMemory: 2L << 30, WarpSize: 32);
        var runtime = new GpuRuntime(native, facts, GpuKernelOptions.Default with { BlasPrompt = false }, programmaticLaunch: false);
        runtime.LoadKernels(new FakeCompiler(), KernelSource.For(KernelDialect.Cuda, 32, ""), _cache);
        return (new GpuDevice(runtime, "details"), native);
    }

    private sealed class FakeCompiler : IGpuKernelCompiler
    {
        public string LibraryName => "fake";
        public string Version => "1";
        public IReadOnlyList<string> ImageExtensions { get; } = ["cubin"];
        public (byte[] Image, string Extension) Compile(string source, string programName) => ([1, 2, 3], "cubin");
    }

    [Fact]
    public void A_copy_to_another_gpus_queue_is_ordered_both_ways_with_events()
    {
        var log = new List<string>();
        var (a, _) = Device("a", log, peers: true, baseAddress: 0x1000_0000);
        var (b, _) = Device("b", log, peers: true, baseAddress: 0x2000_0000);
        using var qa = a.CreateQueue();
        using var qb = b.CreateQueue();
        using var bufferA = a.Buffers.AllocateOwned("x on a", 4096);
        using var bufferB = b.Buffers.AllocateOwned("x on b", 4096);
        log.Clear();

        bool copied = qa.CopyTo(new DeviceTensor(bufferA, 256, GgmlType.F32), qb, new DeviceTensor(bufferB, 512, GgmlType.F32), 1024);

        Assert.True(copied);
        Assert.Equal([
            "b: current", "b: create event " + EventOf(log, "b"), $"b: record event {EventOf(log, "b")} on stream {StreamOf(log, "b")}",
            "a: current", "a: create event " + EventOf(log, "a"), $"a: stream {StreamOf(log, "a")} waits for event {EventOf(log, "b")}",
            $"a: peer copy 1024 B from 0x{0x1000_0000 + 256:X} to 0x{0x2000_0000 + 512:X} on b via stream {StreamOf(log, "a")}",
            $"a: record event {EventOf(log, "a")} on stream {StreamOf(log, "a")}",
            "b: current", $"b: stream {StreamOf(log, "b")} waits for event {EventOf(log, "a")}",
        ], log);

        // A second copy reuses the events.
        log.Clear();
        Assert.True(qa.CopyTo(new DeviceTensor(bufferA, 0, GgmlType.F32), qb, new DeviceTensor(bufferB, 0, GgmlType.F32), 256));
        Assert.DoesNotContain(log, l => l.Contains("create event", StringComparison.Ordinal));
    }

    [Fact]
    public void A_peer_the_binding_cannot_reach_gets_nothing_and_the_answer_is_false()
    {
        var log = new List<string>();
        var (a, _) = Device("a", log, peers: true, baseAddress: 0x1000_0000);
        var (b, _) = Device("b", log, peers: false, baseAddress: 0x2000_0000);
        using var qa = a.CreateQueue();
        using var qb = b.CreateQueue();
        using var bufferA = a.Buffers.AllocateOwned("x on a", 4096);
        using var bufferB = b.Buffers.AllocateOwned("x on b", 4096);
        log.Clear();

        Assert.False(qa.CopyTo(new DeviceTensor(bufferA, 0, GgmlType.F32), qb, new DeviceTensor(bufferB, 0, GgmlType.F32), 1024));
        Assert.Empty(log);
    }

    [Fact]
    public void A_tensor_of_the_wrong_device_is_refused_before_anything_is_enqueued()
    {
        var log = new List<string>();
        var (a, _) = Device("a", log, peers: true, baseAddress: 0x1000_0000);
        var (b, _) = Device("b", log, peers: true, baseAddress: 0x2000_0000);
        using var qa = a.CreateQueue();
        using var qb = b.CreateQueue();
        using var bufferA = a.Buffers.AllocateOwned("x on a", 4096);
        log.Clear();

        // dst on a, although the destination queue is b's
        Assert.Throws<ArgumentException>(() => qa.CopyTo(new DeviceTensor(bufferA, 0, GgmlType.F32), qb, new DeviceTensor(bufferA, 1024, GgmlType.F32), 256));
        Assert.Empty(log);
    }

    [Fact]
    public void A_virtual_device_reports_its_share_of_memory_and_a_name_and_id_of_its_own()
    {
        var log = new List<string>();
        var native = new RecordingNative("v1", log, peers: true, baseAddress: 0x1000_0000);
        var facts = new GpuDeviceFacts("Test GPU", "0000:03:00.0", "sm_90", false, false, false, 40, 2L << 30, 32);
        var runtime = new GpuRuntime(native, facts, GpuKernelOptions.Default, programmaticLaunch: false) { Virtual = (1, 2) };
        var device = new GpuDevice(runtime, "details");
        Assert.Equal("Test GPU (virtual 1 of 2)", device.Description.Name);
        Assert.Equal("0000:03:00.0/v1", device.Description.StableId);
        Assert.Equal((1L << 29, 1L << 30), device.Buffers.QueryMemory()); // half of the native layer's 1 GiB free, 2 GiB total
        Assert.Equal(1L << 29, device.Description.FreeMemory);
    }

    private static string EventOf(List<string> log, string device)
        => log.First(l => l.StartsWith($"{device}: create event ", StringComparison.Ordinal))[$"{device}: create event ".Length..];

    private static string StreamOf(List<string> log, string device)
    {
        string record = log.First(l => l.StartsWith($"{device}: record event", StringComparison.Ordinal));
        return record[(record.LastIndexOf(' ') + 1)..];
    }
}

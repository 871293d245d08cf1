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

    private (GpuDevice Device, RecordingGpuNative Native) Device(string name, List<string> log, bool peers, ulong baseAddress)
        => RecordingGpuNative.Device(name, log, peers, baseAddress, _cache);

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
        var native = new RecordingGpuNative("v1", log, peers: true, baseAddress: 0x1000_0000);
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

using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// The queue's side of step graphs (docs/gpu-kernels.md#step-graphs): with the graphs option on, kernels go to the step
/// graph, and whatever recorded kernels there are run before any live stream work (copies, memsets, host waits), since
/// a recorded kernel has not been launched yet. Over a recording native layer and a recording step graph, no GPU.
/// </summary>
public sealed unsafe class GpuStepGraphQueueTests : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("pe-graph-").FullName;

    public void Dispose() => Directory.Delete(_cache, true);

    private sealed class RecordingStepGraph(List<string> log) : IGpuStepGraph
    {
        private bool _suspended;
        public bool TryRecord(nint function, Launch launch, void** args)
        {
            if (_suspended) return false;
            log.Add("graph: record");
            return true;
        }
        public void Flush() => log.Add("graph: flush");
        public void EndStep() { log.Add("graph: end step"); _suspended = false; }
        public void SuspendUntilStepEnd() { log.Add("graph: suspend"); _suspended = true; }
        public void Dispose() { }
    }

    [Fact]
    public void Recorded_kernels_are_launched_before_any_live_stream_work()
    {
        var log = new List<string>();
        var (device, _) = RecordingGpuNative.Device("gpu", log, peers: false, 0x1000_0000, _cache,
                                                    GpuKernelOptions.Default with { BlasPrompt = false, Graphs = true }, logWork: true,
                                                    stepGraphs: _ => new RecordingStepGraph(log));
        using var queue = device.CreateQueue();
        using var buffer = device.Buffers.AllocateOwned("activations", 1 << 20);
        DeviceTensor At(long offset) => new(buffer, offset, GgmlType.F32);
        log.Clear();

        queue.Upload(new float[64], At(0));
        queue.GetRows(At(1 << 16), 64, [1, 2], At(1 << 17)); // uploads the ids, then a kernel
        queue.Add(At(0), At(1 << 17), At(1 << 17), 64);
        queue.Upload(new float[64], At(0));                  // live: the two kernels before it must have been launched
        queue.SiluMul(At(0), At(1 << 17), At(1 << 18), 64);
        queue.Download(At(1 << 18), new float[64]);
        queue.Synchronize();

        int pending = 0;
        foreach (string entry in log)
        {
            if (entry == "graph: record") pending++;
            else if (entry is "graph: flush" or "graph: end step") pending = 0;
            else if (entry.StartsWith("gpu: copy", StringComparison.Ordinal) || entry.StartsWith("gpu: memset", StringComparison.Ordinal)
                     || entry.StartsWith("gpu: wait", StringComparison.Ordinal))
                Assert.True(pending == 0, $"'{entry}' ran while {pending} recorded kernel(s) were not launched:\n{string.Join('\n', log)}");
        }
        Assert.Equal(3, log.Count(l => l == "graph: record"));
        Assert.DoesNotContain(log, l => l.StartsWith("gpu: launch", StringComparison.Ordinal)); // every kernel went to the graph
        Assert.Contains("gpu: copy to host", log);
    }
}

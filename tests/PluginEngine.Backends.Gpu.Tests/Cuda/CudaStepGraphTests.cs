using System.Runtime.InteropServices;
using PluginEngine.Backends.Cuda;
using PluginEngine.Backends.Cuda.Native;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Cuda;

/// <summary>
/// Step graphs (docs/gpu-kernels.md#step-graphs) over a recording fake of the driver's graph API, no GPU: a segment runs
/// live the first time it is seen, as a graph built the second time (a chain of kernel nodes with programmatic edges),
/// and is then replayed with only the nodes whose arguments changed updated; long steps are cut into segments; another
/// grid is another segment; a graph the driver refuses turns step graphs off and the kernels still run, live.
/// </summary>
public sealed unsafe class CudaStepGraphTests
{
    private static readonly List<string> s_log = []; // the fakes' calls; the tests of this class run one at a time
    private static nint s_handles = 1000;
    private static bool s_refuseNodes;

    // Kernel f takes f & 0xF parameters of 8 bytes, except the second one, of 4 (an int).
    private const nint Norm = 0x12, MatVec = 0x13, Attention = 0x11, Undescribed = 0x10;

    [UnmanagedCallersOnly]
    private static int FuncGetParamInfo(nint f, nuint index, nuint* offset, nuint* size)
    {
        if ((int)index >= (f & 0xF)) return 1;
        *size = index == 1 ? 4u : 8u;
        *offset = index * 8;
        return 0;
    }

    [UnmanagedCallersOnly]
    private static int GraphCreate(nint* graph, uint flags) { *graph = ++s_handles; s_log.Add($"create graph {*graph}"); return 0; }

    [UnmanagedCallersOnly]
    private static int AddKernelNode(nint* node, nint graph, nint* dependencies, nuint count, CudaDriver.KernelNodeParams* p)
    {
        if (s_refuseNodes) return 801; // CUDA_ERROR_NOT_SUPPORTED
        *node = ++s_handles;
        s_log.Add($"node {*node}: kernel {p->Function:X} grid {p->GridX} arg {*(long*)p->KernelParams[0]} dependencies {count}");
        return 0;
    }

    [UnmanagedCallersOnly]
    private static int AddDependencies(nint graph, nint* from, nint* to, CudaDriver.GraphEdgeData* edge, nuint count)
    {
        s_log.Add($"edge {from[0]} -> {to[0]} type {edge->Type} port {edge->FromPort}");
        return 0;
    }

    [UnmanagedCallersOnly]
    private static int Instantiate(nint* exec, nint graph, ulong flags) { *exec = ++s_handles; s_log.Add($"instantiate {graph} as {*exec}"); return 0; }

    [UnmanagedCallersOnly]
    private static int SetParams(nint exec, nint node, CudaDriver.KernelNodeParams* p)
    {
        s_log.Add($"update node {node} of {exec}: arg {*(long*)p->KernelParams[0]}, {*(int*)p->KernelParams[1]}");
        return 0;
    }

    [UnmanagedCallersOnly]
    private static int GraphLaunch(nint exec, nint stream) { s_log.Add($"launch graph {exec} on {stream}"); return 0; }

    [UnmanagedCallersOnly]
    private static int Destroy(nint handle) { s_log.Add($"destroy {handle}"); return 0; }

    [UnmanagedCallersOnly]
    private static int LaunchEx(CudaDriver.LaunchConfig* config, nint f, void** args, void** extra)
    {
        s_log.Add($"live kernel {f:X} grid {config->GridX} arg {*(long*)args[0]}");
        return 0;
    }

    [UnmanagedCallersOnly]
    private static int ErrorName(int result, byte** name) => 1;

    private static CudaStepGraph NewGraph(bool programmaticEdges = true)
    {
        s_log.Clear();
        s_refuseNodes = false;
        var d = CudaDriver.Unbound();
        d.cuFuncGetParamInfo = &FuncGetParamInfo;
        d.cuGraphCreate = &GraphCreate;
        d.cuGraphAddKernelNode = &AddKernelNode;
        if (programmaticEdges) d.cuGraphAddDependencies = &AddDependencies;
        d.cuGraphInstantiateWithFlags = &Instantiate;
        d.cuGraphExecKernelNodeSetParams = &SetParams;
        d.cuGraphLaunch = &GraphLaunch;
        d.cuGraphDestroy = &Destroy;
        d.cuGraphExecDestroy = &Destroy;
        d.cuLaunchKernelEx = &LaunchEx;
        d.cuGetErrorName = &ErrorName;
        Assert.True(d.HasGraphs);
        var native = new CudaNative(d, 0, 0);
        var facts = new GpuDeviceFacts("Test GPU", "0000:03:00.0", "sm_90", false, false, false, 132, 80L << 30, 32);
        var runtime = new GpuRuntime(native, facts, GpuKernelOptions.Default with { Graphs = true }, programmaticLaunch: true);
        return new CudaStepGraph(runtime, native, stream: 7);
    }

    private static void Record(CudaStepGraph graph, nint kernel, long pointer, int scalar, uint grid = 4)
    {
        long third = 99;
        void** args = stackalloc void*[] { &pointer, &scalar, &third };
        Assert.True(graph.TryRecord(kernel, new Launch(grid, 1, 256), args));
    }

    /// <summary>A decode step in miniature: the attention's argument is the position.</summary>
    private static void Step(CudaStepGraph graph, int position)
    {
        Record(graph, Norm, 100, 1);
        Record(graph, Attention, 200, 0); // one parameter: only the pointer
        Record(graph, MatVec, 300, position);
        graph.EndStep();
    }

    private static string Exec() => s_log.Single(l => l.StartsWith("instantiate", StringComparison.Ordinal)).Split(' ')[^1];

    [Fact]
    public void A_step_runs_live_first_then_as_a_graph_then_replays_with_only_the_changed_node_updated()
    {
        using var graph = NewGraph();
        Step(graph, 5);
        Assert.Equal(["live kernel 12 grid 4 arg 100", "live kernel 11 grid 4 arg 200", "live kernel 13 grid 4 arg 300"], s_log);

        s_log.Clear();
        Step(graph, 6);
        Assert.Equal(8, s_log.Count);
        Assert.StartsWith("create graph", s_log[0]);
        Assert.Matches(@"^node \d+: kernel 12 grid 4 arg 100 dependencies 0$", s_log[1]);
        Assert.Matches(@"^node \d+: kernel 11 grid 4 arg 200 dependencies 0$", s_log[2]);
        Assert.Matches(@"^edge \d+ -> \d+ type 1 port 1$", s_log[3]); // programmatic: each kernel scheduled while its predecessor runs
        Assert.Matches(@"^node \d+: kernel 13 grid 4 arg 300 dependencies 0$", s_log[4]);
        Assert.Matches(@"^edge \d+ -> \d+ type 1 port 1$", s_log[5]);
        Assert.StartsWith("instantiate", s_log[6]);
        string exec = Exec();
        Assert.Equal($"launch graph {exec} on 7", s_log[7]);
        string matVecNode = s_log[4].Split(' ', ':')[1];

        s_log.Clear();
        Step(graph, 7); // only the mat-vec's int changed
        Assert.Equal([$"update node {matVecNode} of {exec}: arg 300, 7", $"launch graph {exec} on 7"], s_log);

        s_log.Clear();
        Step(graph, 7); // nothing changed
        Assert.Equal([$"launch graph {exec} on 7"], s_log);
    }

    [Fact]
    public void Without_programmatic_edges_the_nodes_are_a_plain_chain()
    {
        using var graph = NewGraph(programmaticEdges: false);
        Step(graph, 1);
        s_log.Clear();
        Step(graph, 2);
        Assert.Equal(["dependencies 0", "dependencies 1", "dependencies 1"],
                     s_log.Where(l => l.StartsWith("node", StringComparison.Ordinal)).Select(l => l[l.IndexOf("dependencies", StringComparison.Ordinal)..]));
        Assert.DoesNotContain(s_log, l => l.StartsWith("edge", StringComparison.Ordinal));
    }

    [Fact]
    public void A_long_step_is_cut_into_segments_each_with_its_own_graph()
    {
        using var graph = NewGraph();
        void LongStep(int position)
        {
            for (int i = 0; i < CudaStepGraph.SegmentLaunches + 6; i++) Record(graph, MatVec, 1000 + i, i == 3 ? position : 0);
            graph.EndStep();
        }
        LongStep(1);
        Assert.Equal(CudaStepGraph.SegmentLaunches + 6, s_log.Count(l => l.StartsWith("live", StringComparison.Ordinal)));
        s_log.Clear();
        LongStep(2);
        Assert.Equal(2, s_log.Count(l => l.StartsWith("instantiate", StringComparison.Ordinal)));
        Assert.Equal(CudaStepGraph.SegmentLaunches + 6, s_log.Count(l => l.StartsWith("node", StringComparison.Ordinal)));
        s_log.Clear();
        LongStep(3);
        Assert.Equal(3, s_log.Count); // the first segment's one changed node, then both graphs
        Assert.EndsWith("arg 1003, 3", s_log[0]);
        Assert.All(s_log.Skip(1), l => Assert.StartsWith("launch graph", l));
    }

    [Fact]
    public void Another_grid_is_another_segment_and_runs_live_the_first_time()
    {
        using var graph = NewGraph();
        Step(graph, 1);
        Step(graph, 2);
        s_log.Clear();
        Record(graph, Norm, 100, 1);
        Record(graph, Attention, 200, 0, grid: 8); // e.g. the split attention's block count grew with the context
        Record(graph, MatVec, 300, 3);
        graph.EndStep();
        Assert.Equal(3, s_log.Count);
        Assert.All(s_log, l => Assert.StartsWith("live kernel", l));
    }

    [Fact]
    public void Suspended_recording_leaves_kernels_to_the_caller_until_the_step_ends()
    {
        using var graph = NewGraph();
        Record(graph, Norm, 100, 1);
        graph.SuspendUntilStepEnd(); // e.g. before cuBLAS: what was recorded runs now
        Assert.Equal(["live kernel 12 grid 4 arg 100"], s_log);
        long x = 1; int y = 2; long z = 3;
        void** args = stackalloc void*[] { &x, &y, &z };
        Assert.False(graph.TryRecord(MatVec, new Launch(4, 1, 256), args));
        graph.EndStep();
        Record(graph, MatVec, 300, 0);
    }

    [Fact]
    public void A_graph_the_driver_refuses_turns_step_graphs_off_and_the_kernels_still_run()
    {
        using var graph = NewGraph();
        Step(graph, 1);
        s_refuseNodes = true;
        s_log.Clear();
        Step(graph, 2);
        Assert.Equal(["create graph", "destroy", "live kernel 12 grid 4 arg 100", "live kernel 11 grid 4 arg 200", "live kernel 13 grid 4 arg 300"],
                     s_log.Select(l => l.StartsWith("live", StringComparison.Ordinal) ? l : string.Join(' ', l.Split(' ').Take(l.StartsWith("create", StringComparison.Ordinal) ? 2 : 1))));
        long x = 1; int y = 2; long z = 3;
        void** args = stackalloc void*[] { &x, &y, &z };
        Assert.False(graph.TryRecord(MatVec, new Launch(4, 1, 256), args));
    }

    [Fact]
    public void A_kernel_the_driver_cannot_describe_is_launched_live_and_ends_recording()
    {
        using var graph = NewGraph();
        Record(graph, Norm, 100, 1);
        long x = 1; int y = 2; long z = 3;
        void** args = stackalloc void*[] { &x, &y, &z };
        Assert.False(graph.TryRecord(Undescribed, new Launch(4, 1, 256), args));
        Assert.Equal(["live kernel 12 grid 4 arg 100"], s_log); // what was recorded before it ran first
        Assert.False(graph.TryRecord(Norm, new Launch(4, 1, 256), args));
    }
}

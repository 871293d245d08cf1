using System.Runtime.InteropServices;
using PluginEngine.Backends.Cuda.Native;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Kernels;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// Step graphs (the <c>graphs</c> option): a step's kernels are recorded on the host, not launched, and run as CUDA graphs
/// that are built once and then replayed, so a kernel costs the host a copy of its arguments instead of a driver launch
/// (docs/gpu-kernels.md#step-graphs).
/// </summary>
/// <remarks>
/// <para>
/// A step is cut into segments of at most <see cref="SegmentLaunches"/> kernels (and wherever other stream work, a host
/// wait or buffer work comes between kernels), so the GPU starts on the first segment while the host records the next.
/// A segment is known by its place in the step and its kernels and grids. The first time a segment is seen its kernels
/// are launched directly (a one-off prompt step is not worth a graph); the second time a graph is built for it: one
/// kernel node after another, with programmatic edges where kernels are launched that way, so each kernel is scheduled
/// while its predecessor still runs. From then on the same graph is launched, after the nodes whose arguments changed
/// (a decode step's position and cache length) are updated in place with <c>cuGraphExecKernelNodeSetParams</c>, which
/// affects later launches only.
/// </para>
/// <para>
/// Recording defers work, so the queue flushes (<see cref="Flush"/>) before anything that is not a kernel: copies,
/// memsets, host waits, buffer work on the device (<see cref="GpuRuntime.EnterBufferWork"/>) and cuBLAS, after which
/// the rest of the step runs live (a prompt step's few large GEMMs gain nothing from graphs).
/// </para>
/// </remarks>
internal sealed unsafe class CudaStepGraph : IGpuStepGraph
{
    /// <summary>Kernels per segment: the host launches a graph at least this often while it records a step.</summary>
    internal const int SegmentLaunches = 64;

    /// <summary>Graphs kept; the least recently launched is destroyed past this (a decode step of a 32-layer model is 5 segments).</summary>
    private const int MaxExecutables = 256;

    /// <summary>Kernel arguments are copied at this alignment, with zeroed padding, so two copies compare byte for byte.</summary>
    private const int ArgumentAlignment = 8;

    private readonly GpuRuntime _runtime;
    private readonly CudaNative _native;
    private readonly CudaDriver _driver;
    private readonly nint _stream;
    private readonly bool _programmatic; // kernels launched with programmatic stream serialization: programmatic edges in graphs

    private readonly Dictionary<nint, int[]> _paramSizes = new(); // by kernel: each parameter's size (cuFuncGetParamInfo)
    private readonly Dictionary<SegmentKey, Executable> _executables = new();
    private readonly HashSet<SegmentKey> _seenOnce = new();
    private long _clock; // counts launches of graphs, for least-recently-used eviction

    // The segment being recorded: kernels, launch geometry and a copy of the arguments.
    private readonly Record[] _records = new Record[SegmentLaunches];
    private int _count;
    private byte* _args;
    private int _argsUsed, _argsCapacity;
    private void** _pointers; // one kernel's parameter pointers into _args, rebuilt for each driver call (it copies them)
    private int _pointersCapacity;

    private int _segment;     // the segment's index within the step
    private bool _suspended;  // after cuBLAS until the step ends: kernels run live
    private string? _failure; // a graph could not be built: the rest of the run launches live (said once on stderr)

    public CudaStepGraph(GpuRuntime runtime, CudaNative native, nint stream)
    {
        _runtime = runtime;
        _native = native;
        _driver = native.Driver;
        _stream = stream;
        _programmatic = runtime.ProgrammaticLaunch && _driver.cuGraphAddDependencies != null;
        runtime.AddStepGraph(this);
    }

    public bool TryRecord(nint function, Launch launch, void** args)
    {
        if (_suspended || _failure is not null) return false;
        int[] sizes = ParamSizes(function);
        if (sizes.Length == 0) // every kernel here takes parameters: the driver cannot describe them, so nothing is recorded
        {
            Flush();
            Fail("cuFuncGetParamInfo describes no parameter of a kernel");
            return false;
        }
        int bytes = 0;
        foreach (int size in sizes) bytes += AlignArgument(size);
        if (_argsUsed + bytes > _argsCapacity) GrowArguments(_argsUsed + bytes);
        byte* at = _args + _argsUsed;
        for (int k = 0; k < sizes.Length; k++)
        {
            int slot = AlignArgument(sizes[k]);
            new Span<byte>(at, slot).Clear();
            Buffer.MemoryCopy(args[k], at, slot, sizes[k]);
            at += slot;
        }
        _records[_count++] = new Record(function, launch, _argsUsed);
        _argsUsed += bytes;
        if (_count == SegmentLaunches) Flush();
        return true;
    }

    /// <summary>Launches what was recorded (as a graph, or live the first time a segment is seen); a new segment starts.</summary>
    public void Flush()
    {
        if (_count == 0) return;
        try
        {
            var key = new SegmentKey(_segment, Signature(), _count);
            if (_executables.TryGetValue(key, out var known) && known.Matches(_records, _count))
            {
                Replay(known);
            }
            else if (_seenOnce.Remove(key) && TryBuild(key) is { } built)
            {
                LaunchGraph(built);
            }
            else
            {
                if (_seenOnce.Count >= 4 * MaxExecutables) _seenOnce.Clear();
                _seenOnce.Add(key);
                LaunchLive();
            }
        }
        finally
        {
            _count = 0;
            _argsUsed = 0;
            _segment++;
        }
    }

    public void EndStep()
    {
        Flush();
        _segment = 0;
        _suspended = false;
    }

    public void SuspendUntilStepEnd()
    {
        Flush();
        _suspended = true;
    }

    /// <summary>Updates the nodes whose arguments differ from the graph's last launch, then launches it.</summary>
    private void Replay(Executable graph)
    {
        var bytes = new ReadOnlySpan<byte>(_args, _argsUsed);
        for (int i = 0; i < _count; i++)
        {
            int start = _records[i].ArgOffset, length = (i + 1 < _count ? _records[i + 1].ArgOffset : _argsUsed) - start;
            var now = bytes.Slice(start, length);
            var then = graph.Arguments.AsSpan(start, length);
            if (now.SequenceEqual(then)) continue;
            var node = NodeParams(i);
            _driver.Check(_driver.cuGraphExecKernelNodeSetParams(graph.Exec, graph.Nodes[i], &node), "cuGraphExecKernelNodeSetParams");
            now.CopyTo(then);
        }
        LaunchGraph(graph);
    }

    private void LaunchGraph(Executable graph)
    {
        graph.LastUse = ++_clock;
        _driver.Check(_driver.cuGraphLaunch(graph.Exec, _stream), "cuGraphLaunch");
    }

    private void LaunchLive()
    {
        for (int i = 0; i < _count; i++)
            _native.Launch(_records[i].Function, _records[i].Launch, _stream, Pointers(i), _runtime.ProgrammaticLaunch, "recorded kernel");
    }

    /// <summary>The segment as a graph: a chain of kernel nodes. Null (and graphs off for the run) if the driver refuses.</summary>
    private Executable? TryBuild(SegmentKey key)
    {
        nint graph = 0, exec = 0;
        var nodes = new nint[_count];
        try
        {
            _driver.Check(_driver.cuGraphCreate(&graph, 0), "cuGraphCreate");
            for (int i = 0; i < _count; i++)
            {
                var node = NodeParams(i);
                nint added, previous = i > 0 ? nodes[i - 1] : 0;
                if (i == 0 || _programmatic) _driver.Check(_driver.cuGraphAddKernelNode(&added, graph, null, 0, &node), "cuGraphAddKernelNode");
                else _driver.Check(_driver.cuGraphAddKernelNode(&added, graph, &previous, 1, &node), "cuGraphAddKernelNode");
                if (i > 0 && _programmatic)
                {
                    var edge = new CudaDriver.GraphEdgeData
                    {
                        FromPort = CudaDriver.GraphKernelNodePortProgrammatic, Type = CudaDriver.GraphDependencyTypeProgrammatic,
                    };
                    _driver.Check(_driver.cuGraphAddDependencies(graph, &previous, &added, &edge, 1), "cuGraphAddDependencies_v2");
                }
                nodes[i] = added;
            }
            _driver.Check(_driver.cuGraphInstantiateWithFlags(&exec, graph, 0), "cuGraphInstantiateWithFlags");
        }
        catch (GpuException e)
        {
            if (exec != 0) _driver.cuGraphExecDestroy(exec);
            if (graph != 0) _driver.cuGraphDestroy(graph);
            Fail($"a graph could not be built: {e.Message}");
            return null;
        }
        if (_executables.Count >= MaxExecutables) EvictLeastRecentlyUsed();
        if (_executables.Remove(key, out var replaced)) replaced.Destroy(_driver); // same key, other kernels (a hash collision)
        var executable = new Executable(graph, exec, nodes, _records.AsSpan(0, _count).ToArray(), new ReadOnlySpan<byte>(_args, _argsUsed).ToArray());
        _executables[key] = executable;
        return executable;
    }

    private void Fail(string why)
    {
        _failure = why;
        Console.Error.WriteLine($"cuda: step graphs off for the rest of the run, {why}");
    }

    private void EvictLeastRecentlyUsed()
    {
        var oldest = _executables.MinBy(kv => kv.Value.LastUse);
        _executables.Remove(oldest.Key);
        oldest.Value.Destroy(_driver);
    }

    private CudaDriver.KernelNodeParams NodeParams(int record)
    {
        var r = _records[record];
        return new CudaDriver.KernelNodeParams
        {
            Function = r.Function, GridX = r.Launch.GridX, GridY = r.Launch.GridY, GridZ = r.Launch.GridZ,
            BlockX = r.Launch.BlockX, BlockY = 1, BlockZ = 1, KernelParams = Pointers(record),
        };
    }

    /// <summary>Record <paramref name="record"/>'s parameter pointers into the argument copy (valid until the next call).</summary>
    private void** Pointers(int record)
    {
        int[] sizes = ParamSizes(_records[record].Function);
        if (sizes.Length > _pointersCapacity)
        {
            _pointers = (void**)NativeMemory.Realloc(_pointers, (nuint)(sizes.Length * sizeof(void*)));
            _pointersCapacity = sizes.Length;
        }
        byte* at = _args + _records[record].ArgOffset;
        for (int k = 0; k < sizes.Length; k++)
        {
            _pointers[k] = at;
            at += AlignArgument(sizes[k]);
        }
        return _pointers;
    }

    /// <summary>The kernel's parameter sizes, asked of the driver once per kernel.</summary>
    private int[] ParamSizes(nint function)
    {
        if (_paramSizes.TryGetValue(function, out int[]? sizes)) return sizes;
        var list = new List<int>();
        for (nuint index = 0; ; index++)
        {
            nuint offset, size;
            if (_driver.cuFuncGetParamInfo(function, index, &offset, &size) != 0) break; // past the last parameter
            list.Add(checked((int)size));
        }
        return _paramSizes[function] = list.ToArray();
    }

    private int Signature()
    {
        var hash = new HashCode();
        for (int i = 0; i < _count; i++)
        {
            hash.Add(_records[i].Function);
            hash.Add(_records[i].Launch);
        }
        return hash.ToHashCode();
    }

    private static int AlignArgument(int size) => (size + ArgumentAlignment - 1) & ~(ArgumentAlignment - 1);

    private void GrowArguments(int need)
    {
        int capacity = Math.Max(need, Math.Max(4096, 2 * _argsCapacity));
        _args = (byte*)NativeMemory.Realloc(_args, (nuint)capacity);
        _argsCapacity = capacity;
    }

    public void Dispose()
    {
        _runtime.RemoveStepGraph(this);
        foreach (var graph in _executables.Values) graph.Destroy(_driver);
        _executables.Clear();
        NativeMemory.Free(_args);
        NativeMemory.Free(_pointers);
        _args = null;
        _pointers = null;
        _argsCapacity = _pointersCapacity = 0;
    }

    /// <summary>A recorded kernel: where its argument copy starts in the segment's argument bytes.</summary>
    private readonly record struct Record(nint Function, Launch Launch, int ArgOffset);

    /// <summary>A segment's place in its step, the hash of its kernels and grids, and their count.</summary>
    private readonly record struct SegmentKey(int Segment, int Signature, int Count);

    /// <summary>An instantiated segment: its nodes in launch order and the arguments it was last launched with.</summary>
    private sealed class Executable(nint graph, nint exec, nint[] nodes, Record[] records, byte[] arguments)
    {
        public nint Exec => exec;
        public nint[] Nodes => nodes;
        public byte[] Arguments => arguments;
        public long LastUse;

        /// <summary>Whether the recorded kernels are this graph's, in order, with the same geometry (arguments may differ).</summary>
        public bool Matches(Record[] recorded, int count)
        {
            if (count != records.Length) return false;
            for (int i = 0; i < count; i++)
                if (recorded[i].Function != records[i].Function || recorded[i].Launch != records[i].Launch || recorded[i].ArgOffset != records[i].ArgOffset)
                    return false;
            return true;
        }

        public void Destroy(CudaDriver driver)
        {
            driver.cuGraphExecDestroy(exec);
            driver.cuGraphDestroy(graph);
        }
    }
}

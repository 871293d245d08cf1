using PluginEngine.Backends.Cuda.Native;
using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// Records a queue's work between two host synchronization points (one decode step: from the token's embedding to the
/// logits download) as a CUDA graph by stream capture, and launches it as one unit, so the GPU runs the step's ~500
/// kernels back to back instead of waiting on each launch from the host. Kernel arguments change from step to step
/// (positions, KV-cache offsets), so every step is captured again; a step with the same topology as an earlier one
/// updates that executable graph in place (<c>cuGraphExecUpdate</c>) instead of instantiating a new one.
/// </summary>
/// <remarks>
/// Work that must not be captured ends the capture first (<see cref="Flush"/> launches what was recorded): host
/// synchronization, and cuBLAS calls, after which capture stays suspended until the step ends (a prompt
/// step is a few large GEMMs: launch overhead does not matter there, and re-instantiating graphs would).
/// </remarks>
internal sealed unsafe class CudaStepGraph : IGpuStepGraph
{
    private readonly GpuRuntime _runtime;
    private readonly CudaDriver _driver;
    private readonly nint _stream;

    private readonly Dictionary<ulong, nint> _executables = new(); // by node count: one per step shape seen
    private bool _capturing;

    public CudaStepGraph(GpuRuntime runtime, CudaDriver driver, nint stream)
    {
        _runtime = runtime;
        _driver = driver;
        _stream = stream;
        runtime.AddCapture(this);
    }

    // True between a cuBLAS call and the end of the step: work runs live, nothing is captured.
    private bool _suspended;

    /// <summary>Launches what was recorded and captures nothing more until <see cref="EndStep"/> (before work that runs live, e.g. cuBLAS).</summary>
    public void SuspendUntilStepEnd()
    {
        Flush();
        _suspended = true;
    }

    /// <summary>The host is about to wait for the stream: launches what was recorded; the next step may be captured again.</summary>
    public void EndStep()
    {
        Flush();
        _suspended = false;
    }

    /// <summary>Call before queueing work on the stream: starts a capture unless one is running or capture is suspended.</summary>
    public void BeforeWork()
    {
        if (_capturing || _suspended) return;
        _driver.Check(_driver.cuStreamBeginCapture(_stream, CudaDriver.StreamCaptureModeRelaxed), "cuStreamBeginCapture");
        _capturing = true;
    }

    /// <summary>Ends a running capture and launches what it recorded on the stream (asynchronously).</summary>
    public void Flush()
    {
        if (!_capturing) return;
        _capturing = false;
        nint graph;
        _driver.Check(_driver.cuStreamEndCapture(_stream, &graph), "cuStreamEndCapture");
        try
        {
            nuint nodes = 0;
            _driver.Check(_driver.cuGraphGetNodes(graph, null, &nodes), "cuGraphGetNodes");
            if (nodes == 0) return;
            if (_executables.TryGetValue(nodes, out nint exec))
            {
                CudaDriver.GraphExecUpdateResultInfo info;
                if (_driver.cuGraphExecUpdate(exec, graph, &info) != 0)
                {
                    _driver.cuGraphExecDestroy(exec); // a different topology with the same node count: start again
                    _executables.Remove(nodes);
                    exec = 0;
                }
            }
            if (exec == 0)
            {
                _driver.Check(_driver.cuGraphInstantiateWithFlags(&exec, graph, 0), "cuGraphInstantiateWithFlags");
                _executables[nodes] = exec;
            }
            _driver.Check(_driver.cuGraphLaunch(exec, _stream), "cuGraphLaunch");
        }
        finally
        {
            _driver.cuGraphDestroy(graph);
        }
    }

    public void Dispose()
    {
        _runtime.RemoveCapture(this);
        if (_capturing)
        {
            _capturing = false;
            nint graph;
            if (_driver.cuStreamEndCapture(_stream, &graph) == 0 && graph != 0) _driver.cuGraphDestroy(graph);
        }
        foreach (nint exec in _executables.Values) _driver.cuGraphExecDestroy(exec);
        _executables.Clear();
    }
}

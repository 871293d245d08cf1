using System.Text;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Gpu;

/// <summary>
/// GPU time per kernel, measured with a pair of events around every launch, when PLUGINENGINE_CUDA_PROFILE=1 (CUDA) or
/// PLUGINENGINE_HIP_PROFILE=1 (HIP).
/// The events are read when the host synchronizes anyway (a download), and the table goes to stderr when the queue is
/// disposed. An event pair also times the gap before a kernel starts when the host launches more slowly than the GPU
/// runs, so "GPU time" close to the step's wall time means the GPU was never idle. Not for step graphs (their kernels
/// are launched as graphs, with no events between them): with graphs on, this profile is off.
/// </summary>
internal sealed class GpuOpProfile(IGpuNative native) : IDisposable
{
    private readonly Stack<(nint Start, nint End)> _free = new();
    private readonly List<(string Kernel, nint Start, nint End)> _pending = new();
    private readonly Dictionary<string, (long Count, double Ms)> _totals = new(StringComparer.Ordinal);

    /// <summary>Records the start event of a launch on <paramref name="stream"/>; pass the result to <see cref="End"/>.</summary>
    public (nint Start, nint End) Begin(nint stream)
    {
        if (!_free.TryPop(out var pair))
        {
            pair = (native.CreateEvent(), native.CreateEvent());
        }
        native.RecordEvent(pair.Start, stream);
        return pair;
    }

    public void End(string kernel, (nint Start, nint End) pair, nint stream)
    {
        native.RecordEvent(pair.End, stream);
        _pending.Add((kernel, pair.Start, pair.End));
    }

    /// <summary>Reads every pending pair; the stream must have completed them (call after a synchronize).</summary>
    public void Collect()
    {
        foreach (var (kernel, start, end) in _pending)
        {
            if (native.TryElapsedMilliseconds(start, end, out float ms))
            {
                var t = _totals.GetValueOrDefault(kernel);
                _totals[kernel] = (t.Count + 1, t.Ms + ms);
            }
            _free.Push((start, end));
        }
        _pending.Clear();
    }

    public string Report()
    {
        double all = _totals.Values.Sum(v => v.Ms);
        var sb = new StringBuilder($"{native.Backend} kernel profile (GPU time between launch events; total {all:F1} ms):\n");
        foreach (var (kernel, (count, ms)) in _totals.OrderByDescending(kv => kv.Value.Ms))
            sb.Append($"  {kernel,-28} {count,9} launches {ms,10:F2} ms {100 * ms / Math.Max(all, 1e-9),6:F1}%  {1000 * ms / count,8:F2} us each\n");
        return sb.ToString();
    }

    public void Dispose()
    {
        if (_totals.Count > 0) Console.Error.Write(Report());
        foreach (var (_, s, e) in _pending) _free.Push((s, e));
        _pending.Clear();
        while (_free.TryPop(out var p)) { native.DestroyEvent(p.Start); native.DestroyEvent(p.End); }
    }
}

/// <summary>
/// Where the host's time goes, when PLUGINENGINE_CUDA_PROFILE=host (or HIP): the time inside the driver's launch call,
/// and the time spent waiting for the stream (synchronizations and the downloads' waits), against the time since the
/// queue's first launch.
/// Unlike <see cref="GpuOpProfile"/> it adds nothing to the stream, so it shows whether a step is bound by the host's
/// launches (little waiting) or by the GPU (the host waits most of the time). See docs/gpu-kernels.md#decode-launches.
/// </summary>
internal sealed class GpuHostProfile(string backend)
{
    private long _first; // the first launch: the lifetime measured starts there, after the model's upload
    private long _launches, _launchTicks, _waits, _waitTicks;

    public static long Now => System.Diagnostics.Stopwatch.GetTimestamp();

    public void Launched(long since)
    {
        if (_launches++ == 0) _first = since;
        _launchTicks += Now - since;
    }

    public void Waited(long since)
    {
        if (_launches == 0) return;
        _waits++;
        _waitTicks += Now - since;
    }

    public string Report()
    {
        double f = 1e6 / System.Diagnostics.Stopwatch.Frequency; // ticks to µs
        double life = (Now - _first) * f, launch = _launchTicks * f, wait = _waitTicks * f;
        return $"{backend} host profile: {_launches} launches, {launch / Math.Max(_launches, 1):F2} us each in the launch call " +
               $"({100 * launch / life:F1}% of {life / 1e3:F1} ms); {_waits} waits for the stream, {100 * wait / life:F1}% of the time\n";
    }
}

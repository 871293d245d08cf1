using System.Diagnostics;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu;

/// <summary>
/// Wall time per op kind for one queue, for finding where a forward pass spends its time. Off unless the environment variable
/// <c>PLUGINENGINE_CPU_PROFILE=1</c> is set; then each queue prints its totals to stderr when it is disposed. When off, an op
/// costs one null check.
/// </summary>
internal sealed class CpuOpProfile
{
    private readonly long[] _ticks = new long[Enum.GetValues<ComputeOp>().Length];
    private readonly long[] _calls = new long[Enum.GetValues<ComputeOp>().Length];
    private readonly Dictionary<GgmlType, (long Ticks, long Calls, double Flop)> _matMuls = [];
    private readonly Dictionary<(GgmlType Type, long Rows, long Cols, long Tokens), (long Ticks, long Calls)> _shapes = [];
    private long _first, _last, _repackTicks, _repackCount, _repackBytes;

    /// <summary>A profile when <c>PLUGINENGINE_CPU_PROFILE</c> is <c>1</c>, else null.</summary>
    public static CpuOpProfile? FromEnvironment() => Environment.GetEnvironmentVariable("PLUGINENGINE_CPU_PROFILE") == "1" ? new CpuOpProfile() : null;

    /// <summary>A start timestamp, or 0 without a profile.</summary>
    public static long Start(CpuOpProfile? profile) => profile is null ? 0 : Stopwatch.GetTimestamp();

    /// <summary>Adds the time since <paramref name="start"/> to <paramref name="op"/>.</summary>
    public void Stop(ComputeOp op, long start)
    {
        long now = Stopwatch.GetTimestamp();
        _ticks[(int)op] += now - start;
        _calls[(int)op]++;
        Span(start, now);
    }

    /// <summary>The wall span from the first profiled op's start to the last one's end (the report compares the ops' sum with it).</summary>
    private void Span(long start, long now)
    {
        if (_first == 0) _first = start;
        _last = now;
    }

    /// <summary>Adds a matmul's time to <see cref="ComputeOp.MatMul"/> and to its weight type's line.</summary>
    public void StopMatMul(GgmlType weightType, long rows, long cols, long tokens, long start)
    {
        long now = Stopwatch.GetTimestamp(), ticks = now - start;
        _ticks[(int)ComputeOp.MatMul] += ticks;
        _calls[(int)ComputeOp.MatMul]++;
        var (t, c, f) = _matMuls.GetValueOrDefault(weightType);
        _matMuls[weightType] = (t + ticks, c + 1, f + 2.0 * rows * cols * tokens);
        // Per shape and token count: a decode step of N sequences is N tokens, a prompt chunk many, so the lines of one step size
        // can be told apart (docs/benchmarks.md, concurrent sequences on the CPU).
        var key = (weightType, rows, cols, tokens);
        var (st, sc) = _shapes.GetValueOrDefault(key);
        _shapes[key] = (st + ticks, sc + 1);
        Span(start, now);
    }

    /// <summary>Adds the one-time making of a repacked weight copy of <paramref name="bytes"/> bytes (reported on its own line, not as an op).</summary>
    public void StopRepack(long bytes, long start)
    {
        long now = Stopwatch.GetTimestamp();
        _repackTicks += now - start;
        _repackCount++;
        _repackBytes += bytes;
        Span(start, now);
    }

    /// <summary>Writes one line per op kind that ran: calls, total milliseconds and share of the profiled total.</summary>
    public void Report(TextWriter writer)
    {
        long total = _ticks.Sum();
        if (total == 0) return;
        writer.WriteLine("cpu op profile (PLUGINENGINE_CPU_PROFILE=1):");
        foreach (var op in Enum.GetValues<ComputeOp>())
        {
            int i = (int)op;
            if (_calls[i] == 0) continue;
            double ms = _ticks[i] * 1000.0 / Stopwatch.Frequency;
            writer.WriteLine($"  {op,-22} {_calls[i],9} calls {ms,11:F1} ms {100.0 * _ticks[i] / total,6:F1}%");
            if (op != ComputeOp.MatMul) continue;
            foreach (var (type, (ticks, calls, flop)) in _matMuls.OrderByDescending(m => m.Value.Ticks))
            {
                double typeMs = ticks * 1000.0 / Stopwatch.Frequency;
                writer.WriteLine($"    {type,-20} {calls,9} calls {typeMs,11:F1} ms {100.0 * ticks / total,6:F1}%  {flop / (typeMs * 1e6),8:F1} GFLOP/s");
            }
        }
        writer.WriteLine("  matmuls by shape (rows x cols, tokens per call):");
        foreach (var ((type, rows, cols, tokens), (ticks, calls)) in _shapes.OrderBy(s => s.Key.Tokens).ThenByDescending(s => s.Value.Ticks))
        {
            double ms = ticks * 1000.0 / Stopwatch.Frequency;
            writer.WriteLine($"    {rows}x{cols} {type} n={tokens,-4} {calls,9} calls {ms,11:F1} ms {1000.0 * ms / calls,9:F1} us/call  {2.0 * rows * cols * tokens * calls / (ms * 1e6),8:F1} GFLOP/s");
        }
        if (_repackCount > 0)
            writer.WriteLine($"  weights repacked once: {_repackCount} matrices, {_repackBytes / 1048576.0:F1} MiB, {_repackTicks * 1000.0 / Stopwatch.Frequency:F1} ms (not in the ops' total)");
        double wall = (_last - _first) * 1000.0 / Stopwatch.Frequency;
        writer.WriteLine($"  ops {total * 1000.0 / Stopwatch.Frequency:F1} ms of {wall:F1} ms wall from the first op's start to the last op's end");
    }
}

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

    /// <summary>A profile when <c>PLUGINENGINE_CPU_PROFILE</c> is <c>1</c>, else null.</summary>
    public static CpuOpProfile? FromEnvironment() => Environment.GetEnvironmentVariable("PLUGINENGINE_CPU_PROFILE") == "1" ? new CpuOpProfile() : null;

    /// <summary>A start timestamp, or 0 without a profile.</summary>
    public static long Start(CpuOpProfile? profile) => profile is null ? 0 : Stopwatch.GetTimestamp();

    /// <summary>Adds the time since <paramref name="start"/> to <paramref name="op"/>.</summary>
    public void Stop(ComputeOp op, long start)
    {
        _ticks[(int)op] += Stopwatch.GetTimestamp() - start;
        _calls[(int)op]++;
    }

    /// <summary>Adds a matmul's time to <see cref="ComputeOp.MatMul"/> and to its weight type's line.</summary>
    public void StopMatMul(GgmlType weightType, long rows, long cols, long tokens, long start)
    {
        long ticks = Stopwatch.GetTimestamp() - start;
        _ticks[(int)ComputeOp.MatMul] += ticks;
        _calls[(int)ComputeOp.MatMul]++;
        var (t, c, f) = _matMuls.GetValueOrDefault(weightType);
        _matMuls[weightType] = (t + ticks, c + 1, f + 2.0 * rows * cols * tokens);
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
    }
}

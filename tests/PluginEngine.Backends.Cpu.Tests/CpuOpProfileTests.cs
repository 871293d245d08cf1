using System.Diagnostics;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary><see cref="CpuOpProfile"/>: what <c>PLUGINENGINE_CPU_PROFILE=1</c> prints.</summary>
public class CpuOpProfileTests
{
    [Fact]
    public void Report_lists_each_op_kind_that_ran_and_splits_matmuls_by_weight_type()
    {
        var profile = new CpuOpProfile();
        long oneMs = Stopwatch.Frequency / 1000;
        long now = Stopwatch.GetTimestamp();
        // Start timestamps in the past stand for ops that took that long (Stop measures up to now, so each also includes the
        // time until its own call: on a loaded machine that can be milliseconds, hence Q4_K's 200 ms against Q6_K's 1 ms).
        profile.StopMatMul(GgmlType.Q4_K, rows: 1000, cols: 1000, tokens: 1, start: now - 200 * oneMs);
        profile.StopMatMul(GgmlType.Q4_K, rows: 1000, cols: 1000, tokens: 1, start: now - 200 * oneMs);
        profile.StopMatMul(GgmlType.Q6_K, rows: 1000, cols: 1000, tokens: 1, start: now - oneMs);
        profile.Stop(ComputeOp.Attention, now - oneMs);

        var writer = new StringWriter();
        profile.Report(writer);
        string[] lines = writer.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);

        Assert.Contains("PLUGINENGINE_CPU_PROFILE", lines[0]);
        string matMul = Assert.Single(lines, l => l.TrimStart().StartsWith("MatMul"));
        Assert.Contains(" 3 calls", matMul);
        string q4k = Assert.Single(lines, l => l.TrimStart().StartsWith("Q4_K"));
        Assert.Contains(" 2 calls", q4k);
        Assert.Contains("GFLOP/s", q4k);
        Assert.Single(lines, l => l.TrimStart().StartsWith("Q6_K"));
        Assert.Single(lines, l => l.TrimStart().StartsWith("Attention"));
        Assert.DoesNotContain(lines, l => l.TrimStart().StartsWith("Rope")); // never ran: not listed
        // Q4_K's two matmuls took the longest, so its line comes first under MatMul.
        Assert.True(Array.IndexOf(lines, q4k) < Array.FindIndex(lines, l => l.TrimStart().StartsWith("Q6_K")));
    }

    [Fact]
    public void An_unused_profile_prints_nothing()
    {
        var writer = new StringWriter();
        new CpuOpProfile().Report(writer);
        Assert.Equal("", writer.ToString());
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using PluginEngine.Bench;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Tests.Bench;

/// <summary>Bench rows reach the output as each test finishes, and an interrupted run keeps the rows it measured.</summary>
public sealed class BenchStreamingTests(BenchModelFixture model) : IClassFixture<BenchModelFixture>
{
    private static BenchResult Row(string test, double ts) => new() { Backends = "cpu", ModelLabel = "m", Test = test, AvgTs = ts, SamplesNs = [1, 2] };

    private static readonly MachineInfo Machine = MachineInfo.Current();

    [Theory]
    [InlineData(BenchOutputFormat.JsonLines)]
    [InlineData(BenchOutputFormat.Csv)]
    public void Line_formats_write_each_row_when_it_is_added(BenchOutputFormat format)
    {
        var output = new StringWriter();
        var stream = new BenchRowStream(output, format);

        stream.Add(Row("pp8", 10));
        string afterFirst = output.ToString();
        stream.Add(Row("tg4", 20));
        string afterSecond = output.ToString();
        stream.Complete(Machine, []);

        Assert.True(stream.StreamsRows);
        int headerLines = format == BenchOutputFormat.Csv ? 1 : 0;
        Assert.Equal(headerLines + 1, Lines(afterFirst).Length);
        Assert.Contains("pp8", afterFirst);
        Assert.Equal(headerLines + 2, Lines(afterSecond).Length);
        Assert.StartsWith(afterFirst, afterSecond); // appended, never rewritten
        Assert.Equal(afterSecond, output.ToString()); // Complete adds nothing: every row is out already
        if (format == BenchOutputFormat.Csv) Assert.StartsWith("cpu_info,", afterFirst);
        else Assert.Equal(["pp8", "tg4"], BenchOutput.ReadJsonLines(afterSecond, "stream").Select(r => r.Test));
    }

    [Fact]
    public void Each_streamed_row_is_flushed()
    {
        var sink = new FlushCountingWriter();
        var stream = new BenchRowStream(sink, BenchOutputFormat.JsonLines);

        stream.Add(Row("pp8", 10));
        Assert.Equal(1, sink.Flushes);
        Assert.Single(Lines(sink.Flushed)); // what was flushed holds the whole row
        stream.Add(Row("tg4", 20));
        Assert.Equal(2, sink.Flushes);
        Assert.Equal(2, Lines(sink.Flushed).Length);
    }

    [Theory]
    [InlineData(BenchOutputFormat.Markdown)]
    [InlineData(BenchOutputFormat.Json)]
    public void Document_formats_write_at_completion(BenchOutputFormat format)
    {
        var output = new StringWriter();
        var stream = new BenchRowStream(output, format);

        stream.Add(Row("pp8", 10));
        stream.Add(Row("tg4", 20));
        Assert.Equal("", output.ToString());
        stream.Complete(Machine, [new BenchDeviceInfo("cpu", "test cpu", "")]);

        string text = output.ToString();
        Assert.Contains("pp8", text);
        Assert.Contains("tg4", text);
        Assert.False(stream.StreamsRows);
    }

    [Fact]
    public void Deferred_line_format_writes_rows_changed_after_adding_at_completion()
    {
        var output = new StringWriter();
        var stream = new BenchRowStream(output, BenchOutputFormat.JsonLines, streamRows: false);
        var row = Row("pp8", 10);

        stream.Add(row);
        Assert.Equal("", output.ToString());
        row.RatioVsLlamacpp = 0.5; // the reference ratio is attached after the row was measured
        stream.Complete(Machine, []);

        Assert.Equal(0.5, Assert.Single(BenchOutput.ReadJsonLines(output.ToString(), "stream")).RatioVsLlamacpp);
    }

    [Fact]
    public void Nothing_is_written_for_no_rows_and_adding_after_completion_is_refused()
    {
        var output = new StringWriter();
        var stream = new BenchRowStream(output, BenchOutputFormat.Markdown);
        stream.Complete(Machine, []);

        Assert.Equal("", output.ToString());
        Assert.Throws<InvalidOperationException>(() => stream.Add(Row("pp8", 1)));
        Assert.Throws<InvalidOperationException>(() => stream.Complete(Machine, []));
    }

    [Fact]
    public void Session_hands_each_row_over_before_the_next_test_starts()
    {
        var events = new List<string>();
        var progress = new RecordingProgress(events);

        var run = Session(["pp8", "pp16"], 4).Run(progress, TestContext.Current.CancellationToken, rowMeasured: row => events.Add($"row {row.Test}"));

        Assert.False(run.Interrupted);
        Assert.Equal(3, run.Rows.Count);
        Assert.Equal(
            ["load", "test pp8", "row pp8", "test pp16", "row pp16", "test tg4", "row tg4"],
            events);
    }

    [Fact]
    public void Cancelled_session_returns_the_rows_measured_so_far()
    {
        using var cancellation = new CancellationTokenSource();
        var streamed = new List<BenchResult>();

        var run = Session(["pp8", "pp16"], 4).Run(new RecordingProgress([]), cancellation.Token, row =>
        {
            streamed.Add(row);
            cancellation.Cancel(); // as a signal would, right after the first test
        });

        Assert.True(run.Interrupted);
        var only = Assert.Single(run.Rows);
        Assert.Equal("pp8", only.Test);
        Assert.Same(only, Assert.Single(streamed));
        Assert.Equal(2, only.SamplesNs.Length); // a finished row is complete, not cut short
    }

    [Fact]
    public void Cancellation_before_the_first_test_gives_an_interrupted_run_with_no_rows()
    {
        using var cancellation = new CancellationTokenSource();
        cancellation.Cancel();

        var run = Session(["pp8"], 4).Run(new RecordingProgress([]), cancellation.Token);

        Assert.True(run.Interrupted);
        Assert.Empty(run.Rows);
    }

    /// <summary>
    /// The real program, as a process: jsonl rows reach the pipe while the bench is still running, and SIGTERM (a time
    /// limit's signal) ends it with the rows already out, a note on stderr and exit code 143. The first test (pp8) is short;
    /// the second (tg240: 31 × 240 single-token evaluations) is thousands of times longer than reading a line and sending
    /// the signal, so the signal lands in it; the wait afterwards only guards against a hang.
    /// </summary>
    [Fact]
    public async Task Sigterm_stops_a_streaming_bench_and_keeps_the_rows_already_written()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("sends a POSIX signal (Linux only)");
        string program = Path.Combine(AppContext.BaseDirectory, "pluginengine.dll");
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in new[] { program, "bench", "--plugins", model.PluginsPath, "-m", model.ModelPath, "-t", "1", "-r", "30", "-p", "8", "-n", "240", "-o", "jsonl" })
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        try
        {
            // The first row arrives only when the first test has finished: it was streamed, not printed at the end.
            string? first = process.StandardOutput.ReadLine();
            Assert.NotNull(first);
            Assert.Equal("pp8", Assert.Single(BenchOutput.ReadJsonLines(first, "stdout")).Test);
            Assert.False(process.HasExited, "the bench ended before it was signalled; lengthen its second test");

            Assert.Equal(0, Kill(process.Id, SigTerm));
            string rest = process.StandardOutput.ReadToEnd();
            Assert.True(process.WaitForExit(TimeSpan.FromMinutes(2)), "the bench did not stop after SIGTERM");

            Assert.Equal(128 + SigTerm, process.ExitCode);
            Assert.Equal("", rest.Trim()); // the interrupted tg240 leaves no row, and nothing is printed twice
            string stderr = await error;
            Assert.Contains("SIGTERM: stopping after the current evaluation", stderr);
            Assert.Contains("bench interrupted by SIGTERM: 1 of 2 rows measured", stderr);
        }
        finally
        {
            if (!process.HasExited) process.Kill();
        }
    }

    private const int SigTerm = 15;

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    private BenchSession Session(string[] prompts, int generated)
    {
        var tests = prompts.Select(p => new BenchTest(int.Parse(p[2..], System.Globalization.CultureInfo.InvariantCulture), 0, 0))
            .Append(new BenchTest(0, generated, 0)).ToArray();
        var plan = new BenchPlan
        {
            Models = [BenchModelSource.File(model.ModelPath)],
            Backends = ["cpu"],
            MemoryModes = [ModelMemoryMode.FileMapping],
            HostImports = [HostImportSetting.Resolve(HostImportMode.Off, null)],
            GpuLayers = [-1],
            Threads = [1],
            Batches = [2048],
            MicroBatches = [512],
            Tests = tests,
            Repetitions = 2,
        };
        return new BenchSession(plan, PluginConfiguration.Load(model.PluginsPath), SystemMappingFactory.Instance);
    }

    private static string[] Lines(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries);

    private sealed class RecordingProgress(List<string> events) : IBenchProgress
    {
        public void Report(int index, int total, string message)
            => events.Add(message.StartsWith("loading", StringComparison.Ordinal) ? "load" : "test " + message[(message.LastIndexOf(' ') + 1)..]);
    }

    /// <summary>Counts flushes and keeps the text as of the last one.</summary>
    private sealed class FlushCountingWriter : StringWriter
    {
        public int Flushes { get; private set; }
        public string Flushed { get; private set; } = "";

        public override void Flush()
        {
            Flushes++;
            Flushed = ToString();
            base.Flush();
        }
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Xunit;

namespace PluginEngine.Server.Tests;

/// <summary>The real <c>pluginengine serve</c> process, stopped with SIGTERM while a stream is running (docs/deploy.md#graceful-shutdown).</summary>
public sealed class ShutdownTests
{
    /// <summary>Kills the server if the test ends (fails) before it exited, so no process outlives the test run.</summary>
    private sealed class KillOnFailure(Process process) : IDisposable
    {
        public void Dispose()
        {
            try { if (!process.HasExited) process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int signal);

    private const int SigTerm = 15;

    /// <summary>Starts `pluginengine serve` on a free loopback port and returns it with its address (read from its "listening on" line).</summary>
    private static async Task<(Process Process, Uri Address, StringBuilder Log)> StartServe(string shutdownTimeout, CancellationToken cancellation)
    {
        string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";
        string dll = Path.Combine(ServerFixture.RepoRoot, "host", "bin", configuration, "net10.0", "pluginengine.dll");
        Assert.True(File.Exists(dll), $"{dll} is missing: build the solution first");
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = ServerFixture.RepoRoot, RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
        };
        foreach (var arg in new[] { "exec", dll, "--plugins", Path.Combine(ServerFixture.RepoRoot, "plugins.json"), "serve", "--port", "0", "-t", "1",
                     "-c", "2048", "--seed", "5", "--alias", ServerFixture.ModelId, "--shutdown-timeout", shutdownTimeout })
            start.ArgumentList.Add(arg);
        var process = Process.Start(start)!;
        var log = new StringBuilder();
        var address = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) { address.TrySetException(new InvalidOperationException($"serve ended before listening:\n{log}")); return; }
            lock (log) log.AppendLine(e.Data);
            int at = e.Data.IndexOf("listening on http://", StringComparison.Ordinal);
            if (at >= 0) address.TrySetResult(new Uri(e.Data[(at + "listening on ".Length)..].Split(' ')[0] + "/"));
        };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.AppendLine(e.Data); };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
        return (process, await address.Task.WaitAsync(TimeSpan.FromMinutes(2), cancellation), log);
    }

    private static async Task<int> Stop(Process process, StringBuilder log)
    {
        Assert.Equal(0, kill(process.Id, SigTerm));
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2)); // a failure, never a hang
        try { await process.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"serve did not exit after SIGTERM:\n{log}");
        }
        return process.ExitCode;
    }

    private static HttpRequestMessage StreamRequest(int maxTokens) => new(HttpMethod.Post, "v1/chat/completions")
    {
        Content = Api.Json(Api.Chat("Tell me a long story.", maxTokens, stream: true)),
    };

    [Fact]
    public async Task SIGTERM_lets_a_running_stream_finish_within_the_grace_period()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("SIGTERM is sent with kill(2): Linux only");
        var ct = TestContext.Current.CancellationToken;
        var (process, address, log) = await StartServe("60s", ct);
        using (process)
        using (new KillOnFailure(process))
        {
            using var http = ServerFixture.NewHttp(address, key: null);
            // What the answer is when nothing interrupts it (greedy, same seed).
            using var alone = await http.PostAsync("v1/chat/completions", Api.Json(Api.Chat("Tell me a long story.", 40)), ct);
            var expected = await Api.ReadAnswer(alone);

            using var response = await http.SendAsync(StreamRequest(40), HttpCompletionOption.ResponseHeadersRead, ct);
            var firstPiece = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var reading = Api.ReadStream(response, _ => firstPiece.TrySetResult(), ct);
            await Task.WhenAny(firstPiece.Task, reading);
            int exit = await Stop(process, log);
            var streamed = await reading;

            Assert.True(streamed.Done, $"the stream ended without [DONE]:\n{log}");
            Assert.Equal(expected.Text, streamed.Text);
            Assert.Equal(expected.FinishReason, streamed.FinishReason);
            Assert.Equal(0, exit);
            Assert.Contains("stopped", log.ToString());
        }
    }

    [Fact]
    public async Task SIGTERM_cancels_a_stream_that_outlives_the_grace_period_and_ends_it_properly()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("SIGTERM is sent with kill(2): Linux only");
        var ct = TestContext.Current.CancellationToken;
        var (process, address, log) = await StartServe("200ms", ct);
        using (process)
        using (new KillOnFailure(process))
        {
            using var http = ServerFixture.NewHttp(address, key: null);
            // 100000 tokens is clamped to what the 2048-position context leaves: far longer than the grace period.
            using var response = await http.SendAsync(StreamRequest(100_000), HttpCompletionOption.ResponseHeadersRead, ct);
            var firstPiece = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var reading = Api.ReadStream(response, _ => firstPiece.TrySetResult(), ct);
            await Task.WhenAny(firstPiece.Task, reading);
            int exit = await Stop(process, log);
            var streamed = await reading;

            Assert.True(streamed.Done, $"the stream ended without [DONE]:\n{log}");
            Assert.Equal("length", streamed.FinishReason); // cut short: OpenAI's word for a truncated answer
            Assert.NotNull(streamed.CompletionTokens);
            Assert.True(streamed.CompletionTokens < 2048 - 20, $"{streamed.CompletionTokens} tokens: the stream was not cancelled");
            Assert.Equal(0, exit);
        }
    }
}

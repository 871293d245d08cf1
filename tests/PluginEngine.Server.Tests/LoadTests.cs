using System.Collections.Concurrent;
using Xunit;

namespace PluginEngine.Server.Tests;

/// <summary>
/// Load on loopback, bounded: 64 requests from 16 concurrent clients, every eighth cancelled midway. Every other request
/// gets exactly the text it gets alone (greedy, same seed) — none lost or mixed up — and managed memory after a forced GC
/// returns near its level before the load. No timing thresholds.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class LoadTests(ServerFixture server)
{
    private const int Requests = 64, Clients = 16, Prompts = 16, MaxTokens = 12;

    private static string Prompt(int i) => $"Request {i % Prompts}: say something about the number {i % Prompts}.";

    /// <summary>
    /// A client that sends a streamed request (asking for a long answer, so it is surely still running), reads until
    /// the first piece of text and then drops the connection, as a closed browser tab or a killed process does.
    /// </summary>
    private static async Task LeaveMidway(Uri server, string prompt, CancellationToken ct)
    {
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp);
        await socket.ConnectAsync(server.Host, server.Port, ct);
        string body = System.Text.Json.JsonSerializer.Serialize(Api.Chat(prompt, 400, stream: true));
        string head = $"POST /v1/chat/completions HTTP/1.1\r\nHost: {server.Authority}\r\nAuthorization: Bearer {ServerFixture.ApiKey}\r\n"
            + $"Content-Type: application/json\r\nContent-Length: {System.Text.Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}";
        await socket.SendAsync(System.Text.Encoding.UTF8.GetBytes(head), System.Net.Sockets.SocketFlags.None, ct);
        var received = new System.Text.StringBuilder();
        var buffer = new byte[4096];
        while (!received.ToString().Contains("\"content\":\"", StringComparison.Ordinal) || received.ToString().Split("\"content\":\"").Length < 3)
        {
            int n = await socket.ReceiveAsync(buffer, System.Net.Sockets.SocketFlags.None, ct);
            Assert.True(n > 0, $"the server closed the stream before any text: {received}");
            received.Append(System.Text.Encoding.UTF8.GetString(buffer, 0, n));
        }
        Assert.StartsWith("HTTP/1.1 200", received.ToString());
        socket.LingerState = new System.Net.Sockets.LingerOption(true, 0); // reset: gone at once
        socket.Close();
    }

    [Fact]
    public async Task Concurrent_clients_get_their_own_answers_and_cancelled_ones_free_their_slots()
    {
        var ct = TestContext.Current.CancellationToken;
        // Each distinct prompt's answer when sent alone.
        var alone = new Dictionary<int, (string Text, string Finish)>();
        for (int p = 0; p < Prompts; p++)
        {
            using var response = await server.Http.PostAsync("v1/chat/completions", Api.Json(Api.Chat(Prompt(p), MaxTokens)), ct);
            var (text, finish, _) = await Api.ReadAnswer(response);
            alone[p] = (text, finish);
        }
        long before = GC.GetTotalMemory(forceFullCollection: true);
        var statsBefore = server.Scheduler.Statistics;

        var results = new ConcurrentDictionary<int, Api.Streamed>();
        int cancelled = 0, next = -1;
        async Task Client()
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < Requests)
            {
                bool cancel = i % 8 == 3;
                if (cancel)
                {
                    await LeaveMidway(server.BaseAddress, Prompt(i), ct);
                    Interlocked.Increment(ref cancelled);
                    continue;
                }
                var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = Api.Json(Api.Chat(Prompt(i), MaxTokens, stream: true)) };
                using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
                Assert.True(response.IsSuccessStatusCode, $"request {i}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync(ct)}");
                results[i] = await Api.ReadStream(response, cancellation: ct);
            }
        }
        await Task.WhenAll(Enumerable.Range(0, Clients).Select(_ => Task.Run(Client, ct)));

        Assert.Equal(Requests / 8, cancelled);
        Assert.Equal(Requests - Requests / 8, results.Count);
        foreach (var (i, streamed) in results)
        {
            Assert.True(streamed.Done, $"request {i} ended without [DONE]");
            Assert.Equal(alone[i % Prompts].Text, streamed.Text);
            Assert.Equal(alone[i % Prompts].Finish, streamed.FinishReason);
        }

        // Every request reached the scheduler and finished there (cancelled ones at their next step), and nothing is left.
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct);
        wait.CancelAfter(TimeSpan.FromMinutes(2)); // a failure, never a hang
        while (server.Scheduler.Statistics is var s && (s.BusySlots > 0 || s.Queued > 0 || s.RequestsCompleted - statsBefore.RequestsCompleted < Requests))
            await Task.Delay(10, wait.Token);
        string metrics = await (await ServerFixture.NewHttp(server.BaseAddress, null).GetAsync("metrics", ct)).Content.ReadAsStringAsync(ct);
        var samples = Api.ParseMetrics(metrics);
        Assert.True(Api.Metric(samples, "pluginengine_completions_total{model=\"demo\",finish_reason=\"cancelled\"}") >= Requests / 8, metrics);

        long after = GC.GetTotalMemory(forceFullCollection: true);
        Assert.True(after - before < 64L << 20, $"managed memory grew by {(after - before) >> 20} MiB over the load ({before >> 20} → {after >> 20} MiB)");
    }
}

using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace PluginEngine.Server.Tests;

/// <summary>
/// The chat page in a real headless browser (Debian's chromium), driven over the Chrome DevTools Protocol: it sends a
/// message through the page and watches the streamed answer appear, then its tokens/s line.
/// </summary>
[Collection(ServerCollection.Name)]
public sealed class PageTests(ServerFixture server)
{
    private static string? FindChromium()
    {
        foreach (var name in new[] { "chromium", "chromium-browser", "google-chrome" })
            foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
                if (dir.Length > 0 && File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        return null;
    }

    /// <summary>A minimal DevTools client: one page target, commands answered by id, events ignored.</summary>
    private sealed class DevTools(ClientWebSocket socket) : IAsyncDisposable
    {
        private int _id;

        public async Task<JsonElement> Send(string method, JsonObject? parameters, CancellationToken ct)
        {
            int id = ++_id;
            var message = new JsonObject { ["id"] = id, ["method"] = method, ["params"] = parameters ?? new JsonObject() };
            await socket.SendAsync(Encoding.UTF8.GetBytes(message.ToJsonString()), WebSocketMessageType.Text, true, ct);
            var buffer = new byte[1 << 16];
            while (true)
            {
                using var received = new MemoryStream();
                WebSocketReceiveResult result;
                do
                {
                    result = await socket.ReceiveAsync(buffer, ct);
                    received.Write(buffer, 0, result.Count);
                } while (!result.EndOfMessage);
                using var doc = JsonDocument.Parse(received.ToArray());
                if (!doc.RootElement.TryGetProperty("id", out var got) || got.GetInt32() != id) continue; // an event
                if (doc.RootElement.TryGetProperty("error", out var error)) Assert.Fail($"{method}: {error}");
                return doc.RootElement.GetProperty("result").Clone();
            }
        }

        /// <summary>Evaluates a JavaScript expression in the page and returns its value.</summary>
        public async Task<JsonElement> Evaluate(string expression, CancellationToken ct)
        {
            var result = await Send("Runtime.evaluate", new JsonObject { ["expression"] = expression, ["returnByValue"] = true, ["awaitPromise"] = true }, ct);
            if (result.TryGetProperty("exceptionDetails", out var e)) Assert.Fail($"{expression}: {e}");
            var value = result.GetProperty("result");
            return value.TryGetProperty("value", out var v) ? v.Clone() : default;
        }

        /// <summary>Polls <paramref name="expression"/> until it is true.</summary>
        public async Task WaitFor(string expression, CancellationToken ct)
        {
            while (!(await Evaluate(expression, ct) is { ValueKind: JsonValueKind.True })) await Task.Delay(50, ct);
        }

        public async ValueTask DisposeAsync()
        {
            try { await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "", CancellationToken.None); } catch (WebSocketException) { }
            socket.Dispose();
        }
    }

    [Fact]
    public async Task Page_streams_an_answer_and_shows_its_speed()
    {
        string? chromium = FindChromium();
        if (chromium is null) Assert.Skip("chromium is not installed (apt-get install chromium): the chat page cannot be tested in a browser");
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        timeout.CancelAfter(TimeSpan.FromMinutes(3)); // a failure, never a hang
        var ct = timeout.Token;

        // The answer the API gives for the conversation the page will send (greedy; the page sends no seed).
        var expectedBody = new { model = ServerFixture.ModelId, messages = new[] { new { role = "user", content = "Hello page" } }, max_tokens = 16, temperature = 0 };
        using var expectedResponse = await server.Http.PostAsync("v1/chat/completions", Api.Json(expectedBody), ct);
        var expected = await Api.ReadAnswer(expectedResponse);

        string profile = Directory.CreateTempSubdirectory("pluginengine-chromium-").FullName;
        var start = new ProcessStartInfo(chromium) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var arg in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--remote-debugging-port=0", $"--user-data-dir={profile}", "about:blank" })
            start.ArgumentList.Add(arg);
        using var browser = Process.Start(start)!;
        try
        {
            var endpoint = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
            var log = new StringBuilder();
            browser.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null) { endpoint.TrySetException(new InvalidOperationException($"chromium exited:\n{log}")); return; }
                lock (log) log.AppendLine(e.Data);
                int at = e.Data.IndexOf("ws://", StringComparison.Ordinal);
                if (e.Data.StartsWith("DevTools listening on", StringComparison.Ordinal) && at >= 0) endpoint.TrySetResult(new Uri(e.Data[at..].Trim()));
            };
            browser.OutputDataReceived += (_, _) => { };
            browser.BeginErrorReadLine();
            browser.BeginOutputReadLine();
            var browserSocket = await endpoint.Task.WaitAsync(ct);

            // The page target's own socket, from the DevTools HTTP list.
            using var list = new HttpClient();
            string targets = await list.GetStringAsync($"http://{browserSocket.Authority}/json/list", ct);
            string pageSocket = JsonDocument.Parse(targets).RootElement.EnumerateArray()
                .First(t => t.GetProperty("type").GetString() == "page").GetProperty("webSocketDebuggerUrl").GetString()!;
            var socket = new ClientWebSocket();
            await socket.ConnectAsync(new Uri(pageSocket), ct);
            await using var page = new DevTools(socket);

            await page.Send("Page.navigate", new JsonObject { ["url"] = server.BaseAddress.ToString() }, ct);
            await page.WaitFor("document.readyState === 'complete' && !!document.getElementById('api-key')", ct);
            // The key, then the model list loads; the settings the comparison needs.
            await page.Evaluate($$"""
                (() => {
                  const key = document.getElementById('api-key'); key.value = '{{ServerFixture.ApiKey}}'; key.dispatchEvent(new Event('change'));
                  document.getElementById('temperature').value = '0';
                  document.getElementById('max-tokens').value = '16';
                  return true; })()
                """, ct);
            await page.WaitFor($"document.getElementById('model').textContent === '{ServerFixture.ModelId}'", ct);

            // Record every length the answer takes while it streams, then send the message through the form.
            await page.Evaluate("""
                (() => {
                  window.answerLengths = [];
                  new MutationObserver(() => {
                    const c = document.querySelector('.turn.assistant .content');
                    if (c) window.answerLengths.push(c.textContent.length);
                  }).observe(document.getElementById('conversation'), { subtree: true, childList: true, characterData: true });
                  document.getElementById('message').value = 'Hello page';
                  document.getElementById('composer').requestSubmit();
                  return true; })()
                """, ct);
            await page.WaitFor("!!document.querySelector('.turn.assistant') && !!document.querySelector('.turn.assistant').dataset.done", ct);

            Assert.Equal("true", (await page.Evaluate("document.querySelector('.turn.assistant').dataset.done", ct)).GetString());
            Assert.Equal("Hello page", (await page.Evaluate("document.querySelector('.turn.user .content').textContent", ct)).GetString());
            Assert.Equal(expected.Text, (await page.Evaluate("document.querySelector('.turn.assistant .content').textContent", ct)).GetString());
            var lengths = (await page.Evaluate("Array.from(new Set(window.answerLengths.filter(n => n > 0)))", ct)).EnumerateArray().Select(e => e.GetInt32()).ToList();
            Assert.True(lengths.Count >= 2, $"the answer appeared in {lengths.Count} step(s): not streamed ({string.Join(",", lengths)})");
            string stats = (await page.Evaluate("document.querySelector('.turn.assistant .stats').textContent", ct)).GetString()!;
            Assert.Matches($@"^{expected.CompletionTokens} tokens, [0-9.]+ tokens/s · prompt [0-9]+ tokens · finish: {expected.FinishReason}$", stats);
        }
        finally
        {
            if (!browser.HasExited) browser.Kill(entireProcessTree: true);
            await browser.WaitForExitAsync(CancellationToken.None);
            try { Directory.Delete(profile, recursive: true); } catch (IOException) { }
        }
    }
}

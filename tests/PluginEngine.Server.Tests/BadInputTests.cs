using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using PluginEngine.Core.Inference;
using Xunit;

namespace PluginEngine.Server.Tests;

/// <summary>Bad requests get the right status and an OpenAI-shaped error naming what is wrong; the server keeps serving.</summary>
[Collection(ServerCollection.Name)]
public sealed class BadInputTests(ServerFixture server)
{
    private const string Good = """{"model":"demo","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"temperature":0}""";

    /// <summary>The error's status, type, param and code, after checking its shape is exactly OpenAI's.</summary>
    private static async Task<(int Status, string Message, string Type, string? Param, string? Code)> Error(HttpResponseMessage response)
    {
        string body = await response.Content.ReadAsStringAsync();
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var doc = JsonDocument.Parse(body);
        var root = doc.RootElement;
        Assert.Equal(["error"], root.EnumerateObject().Select(p => p.Name));
        var error = root.GetProperty("error");
        Assert.Equal(["message", "type", "param", "code"], error.EnumerateObject().Select(p => p.Name));
        string? Text(string name) => error.GetProperty(name).ValueKind == JsonValueKind.Null ? null : error.GetProperty(name).GetString();
        return ((int)response.StatusCode, Text("message")!, Text("type")!, Text("param"), Text("code"));
    }

    private async Task<HttpResponseMessage> Post(string path, string body, HttpClient? http = null)
        => await (http ?? server.Http).PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken);

    private async Task StillServes()
    {
        using var response = await Post("v1/chat/completions", Good);
        var (text, _, tokens) = await Api.ReadAnswer(response);
        Assert.InRange(tokens, 1, 3);
    }

    [Theory]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}""", 400, null, "invalid_json", "not valid JSON")]
    [InlineData("""[1,2]""", 400, null, "invalid_type", "$: expected a JSON object")]
    [InlineData("""{"model":"demo"}""", 400, "messages", "missing_required_parameter", "$.messages: required")]
    [InlineData("""{"messages":"hi"}""", 400, "messages", "invalid_type", "$.messages: expected an array of messages, got a string")]
    [InlineData("""{"messages":[{"role":"user","content":5}]}""", 400, "messages[0].content", "invalid_type", "$.messages[0].content: expected a string or an array of text parts, got the number 5")]
    [InlineData("""{"messages":[{"role":"user","content":"a"},{"role":7,"content":"b"}]}""", 400, "messages[1].role", "invalid_type", "$.messages[1].role: expected a string")]
    [InlineData("""{"messages":[{"role":"wizard","content":"a"}]}""", 400, "messages[0].role", null, "\"wizard\" is not a role")]
    [InlineData("""{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", 400, "messages[0].content[0].type", "unsupported_parameter", "text only")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}""", 400, "temperature", "invalid_type", "$.temperature: expected a number, got a string")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"temperature":7}""", 400, "temperature", "invalid_value", "between 0 and 2")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":2.5}""", 400, "max_tokens", "invalid_type", "$.max_tokens: expected an integer")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}""", 400, "max_tokens", "invalid_value", "at least 1")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"stream":"yes"}""", 400, "stream", "invalid_type", "$.stream: expected true or false")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"stop":5}""", 400, "stop", "invalid_type", "$.stop: expected a string or an array of strings")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"stop":["a",3]}""", 400, "stop[1]", "invalid_type", "$.stop[1]: expected a string")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"seed":"x"}""", 400, "seed", "invalid_type", "$.seed: expected an integer")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"n":2}""", 400, "n", "unsupported_parameter", "only 1 is supported")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}]}""", 400, "tools", "unsupported_parameter", "tool and function calling are not supported")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}""", 400, "response_format", "unsupported_parameter", "only \"text\"")]
    [InlineData("""{"messages":[{"role":"user","content":"hi"}],"logprobs":true}""", 400, "logprobs", "unsupported_parameter", "not supported")]
    [InlineData("""{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""", 404, "model", "model_not_found", "'gpt-4o' does not exist")]
    public async Task Chat_request_is_refused_with_an_OpenAI_error(string body, int status, string? param, string? code, string messagePart)
    {
        using var response = await Post("v1/chat/completions", body);
        var error = await Error(response);
        Assert.Equal(status, error.Status);
        Assert.Equal(param, error.Param);
        Assert.Equal(code, error.Code);
        Assert.Equal("invalid_request_error", error.Type);
        Assert.Contains(messagePart, error.Message);
        await StillServes();
    }

    [Theory]
    [InlineData("""{"prompt":3}""", "prompt", "invalid_type")]
    [InlineData("""{"prompt":["a","b"]}""", "prompt", "unsupported_parameter")]
    [InlineData("""{"prompt":"a","echo":true}""", "echo", "unsupported_parameter")]
    public async Task Text_completion_request_is_refused(string body, string param, string code)
    {
        using var response = await Post("v1/completions", body);
        var error = await Error(response);
        Assert.Equal((400, param, code), (error.Status, error.Param, error.Code));
        await StillServes();
    }

    [Fact]
    public async Task Prompt_longer_than_the_slot_context_is_413()
    {
        string longText = string.Join(' ', Enumerable.Range(0, ServerFixture.SlotContext).Select(i => $"word{i}"));
        var body = JsonSerializer.Serialize(new { model = "demo", messages = new[] { new { role = "user", content = longText } } });
        using var response = await Post("v1/chat/completions", body);
        var error = await Error(response);
        Assert.Equal(413, error.Status);
        Assert.Equal("context_length_exceeded", error.Code);
        Assert.Contains($"a slot's context holds {ServerFixture.SlotContext}", error.Message);
        await StillServes();
    }

    [Theory]
    [InlineData("1000000000000")]
    [InlineData("1e30")]
    public async Task Huge_max_tokens_is_clamped_to_the_context(string maxTokens)
    {
        // Clamped, not refused (docs/serve.md#max-tokens): the answer ends at the end of its turn or when the slot's context is full.
        using var response = await Post("v1/chat/completions", $$"""{"messages":[{"role":"user","content":"hi"}],"max_tokens":{{maxTokens}},"temperature":0}""");
        string body = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        Assert.True(response.IsSuccessStatusCode, body);
        using var doc = JsonDocument.Parse(body);
        var usage = doc.RootElement.GetProperty("usage");
        int total = usage.GetProperty("prompt_tokens").GetInt32() + usage.GetProperty("completion_tokens").GetInt32();
        Assert.InRange(total, 1, ServerFixture.SlotContext);
        string finish = doc.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString()!;
        Assert.True(finish == "stop" || total == ServerFixture.SlotContext, $"finish {finish} with {total} of {ServerFixture.SlotContext} positions used");
        await StillServes();
    }

    [Fact]
    public async Task Missing_or_wrong_key_is_401_and_health_needs_none()
    {
        using var anonymous = ServerFixture.NewHttp(server.BaseAddress, key: null);
        using (var response = await Post("v1/chat/completions", Good, anonymous))
        {
            var error = await Error(response);
            Assert.Equal((401, "missing_api_key"), (error.Status, error.Code));
        }
        using var wrong = ServerFixture.NewHttp(server.BaseAddress, key: ServerFixture.ApiKey + "x");
        using (var response = await Post("v1/chat/completions", Good, wrong))
        {
            var error = await Error(response);
            Assert.Equal((401, "invalid_api_key"), (error.Status, error.Code));
        }
        using (var response = await wrong.GetAsync("v1/models", TestContext.Current.CancellationToken))
            Assert.Equal(401, (await Error(response)).Status);
        using (var health = await anonymous.GetAsync("health", TestContext.Current.CancellationToken))
            Assert.Equal(200, (int)health.StatusCode);
        await StillServes();
    }

    [Fact]
    public async Task Unknown_endpoint_is_404()
    {
        using var response = await server.Http.GetAsync("v1/embeddings", TestContext.Current.CancellationToken);
        var error = await Error(response);
        Assert.Equal((404, "not_found"), (error.Status, error.Code));
        await StillServes();
    }

    [Fact]
    public async Task Full_queue_is_503_and_the_server_recovers()
    {
        // A server of its own whose queue holds nothing: once every slot runs a long request, the next one is refused.
        using var model = ServerFixture.LoadDemo();
        using var scheduler = SchedulerFactory.Create(model, new ContextOptions(ServerFixture.SlotContext, 64), ServerFixture.Slots, queueCapacity: 0);
        await using var own = ServerFixture.Serve(model, scheduler);
        await own.StartAsync(TestContext.Current.CancellationToken);
        using var http = ServerFixture.NewHttp(new Uri(own.ListeningAddress + "/"));
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        stop.CancelAfter(TimeSpan.FromMinutes(3)); // a failure, never a hang

        var long_ = JsonSerializer.Serialize(Api.Chat("tell me everything", maxTokens: 100_000, stream: true));
        var running = new List<HttpResponseMessage>();
        for (int i = 0; i < ServerFixture.Slots; i++)
        {
            var request = new HttpRequestMessage(HttpMethod.Post, "v1/chat/completions") { Content = new StringContent(long_, Encoding.UTF8, "application/json") };
            running.Add(await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, stop.Token));
        }
        while (scheduler.Statistics.BusySlots < ServerFixture.Slots) await Task.Delay(10, stop.Token);

        using (var refused = await Post("v1/chat/completions", Good, http))
        {
            var error = await Error(refused);
            Assert.Equal((503, "server_error", "queue_full"), (error.Status, error.Type, error.Code));
            Assert.Equal("1", refused.Headers.RetryAfter?.ToString());
        }
        foreach (var r in running) r.Dispose(); // the clients leave: their slots free at the next step
        while (scheduler.Statistics.BusySlots > 0) await Task.Delay(10, stop.Token);
        using var after = await Post("v1/chat/completions", Good, http);
        Assert.True((await Api.ReadAnswer(after)).CompletionTokens >= 1);
        await own.StopAsync(TestContext.Current.CancellationToken);
    }
}

using System.ClientModel;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Models;
using Xunit;
using AiChatMessage = Microsoft.Extensions.AI.ChatMessage;
using AiChatRole = Microsoft.Extensions.AI.ChatRole;

namespace PluginEngine.Server.Tests;

/// <summary>The official OpenAI .NET client and Microsoft.Extensions.AI.OpenAI against the server on a loopback port.</summary>
[Collection(ServerCollection.Name)]
public sealed class ClientTests(ServerFixture server)
{
    private OpenAIClientOptions ClientOptions => new() { Endpoint = new Uri(server.BaseAddress, "v1") };

    private ChatClient OpenAiChat() => new(ServerFixture.ModelId, new ApiKeyCredential(ServerFixture.ApiKey), ClientOptions);

    private static readonly OpenAI.Chat.ChatMessage[] Conversation = [new SystemChatMessage("Be brief."), new UserChatMessage("Hello, who are you?")];

    private static ChatCompletionOptions Greedy(int maxTokens) => new() { Temperature = 0, MaxOutputTokenCount = maxTokens, Seed = 42 };

    [Fact]
    public async Task OpenAI_client_gets_the_same_answer_streamed_and_not()
    {
        var chat = OpenAiChat();
        var completion = (await chat.CompleteChatAsync(Conversation, Greedy(12), TestContext.Current.CancellationToken)).Value;
        string text = completion.Content[0].Text;
        Assert.False(string.IsNullOrEmpty(text));
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.Equal(ServerFixture.ModelId, completion.Model);
        Assert.True(completion.Usage.InputTokenCount > 10, $"prompt tokens {completion.Usage.InputTokenCount}");
        Assert.Equal(completion.Usage.InputTokenCount + completion.Usage.OutputTokenCount, completion.Usage.TotalTokenCount);
        Assert.True(completion.FinishReason == OpenAI.Chat.ChatFinishReason.Length ? completion.Usage.OutputTokenCount == 12 : completion.Usage.OutputTokenCount < 12,
            $"{completion.FinishReason} after {completion.Usage.OutputTokenCount} tokens");

        var streamed = new StringBuilder();
        int updates = 0;
        OpenAI.Chat.ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        await foreach (var update in chat.CompleteChatStreamingAsync(Conversation, Greedy(12), TestContext.Current.CancellationToken))
        {
            foreach (var part in update.ContentUpdate) { streamed.Append(part.Text); updates++; }
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }
        Assert.Equal(text, streamed.ToString());
        Assert.True(updates >= 2, $"{updates} content updates: the answer was not streamed");
        Assert.Equal(completion.FinishReason, finish);
        Assert.NotNull(usage); // the client asks for stream_options.include_usage
        Assert.Equal(completion.Usage.InputTokenCount, usage!.InputTokenCount);
        Assert.Equal(completion.Usage.OutputTokenCount, usage.OutputTokenCount);
    }

    [Fact]
    public async Task Extensions_AI_client_matches_the_OpenAI_client()
    {
        string expected = (await OpenAiChat().CompleteChatAsync(Conversation, Greedy(10), TestContext.Current.CancellationToken)).Value.Content[0].Text;

        IChatClient client = OpenAiChat().AsIChatClient();
        AiChatMessage[] messages = [new(AiChatRole.System, "Be brief."), new(AiChatRole.User, "Hello, who are you?")];
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 10, Seed = 42 };
        var response = await client.GetResponseAsync(messages, options, TestContext.Current.CancellationToken);
        Assert.Equal(expected, response.Text);
        Assert.NotNull(response.Usage);
        Assert.Equal(response.Usage!.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);

        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(messages, options, TestContext.Current.CancellationToken)) updates.Add(u);
        var streamed = updates.ToChatResponse();
        Assert.Equal(expected, streamed.Text);
        Assert.Equal(response.FinishReason, streamed.FinishReason);
        Assert.Equal(response.Usage.OutputTokenCount, streamed.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task Sampled_answers_follow_the_seed()
    {
        var chat = OpenAiChat();
        ChatCompletionOptions Seeded(long seed) => new() { Temperature = 1.0f, TopP = 1, MaxOutputTokenCount = 16, Seed = seed };
        string a = (await chat.CompleteChatAsync(Conversation, Seeded(1), TestContext.Current.CancellationToken)).Value.Content[0].Text;
        string again = (await chat.CompleteChatAsync(Conversation, Seeded(1), TestContext.Current.CancellationToken)).Value.Content[0].Text;
        string b = (await chat.CompleteChatAsync(Conversation, Seeded(2), TestContext.Current.CancellationToken)).Value.Content[0].Text;
        Assert.Equal(a, again);
        Assert.NotEqual(a, b); // random weights at temperature 1 over 16 tokens: two seeds agreeing would mean the seed is ignored
    }

    [Fact]
    public async Task Stop_sequences_cut_the_answer()
    {
        var chat = OpenAiChat();
        string full = (await chat.CompleteChatAsync(Conversation, Greedy(24), TestContext.Current.CancellationToken)).Value.Content[0].Text;
        Assert.True(full.Length >= 6, full);
        string stop = full.Substring(full.Length / 2, 2);
        var options = Greedy(24);
        options.StopSequences.Add(stop);
        var cut = (await chat.CompleteChatAsync(Conversation, options, TestContext.Current.CancellationToken)).Value;
        Assert.Equal(full[..full.IndexOf(stop, StringComparison.Ordinal)], cut.Content.Count == 0 ? "" : cut.Content[0].Text);
        Assert.Equal(OpenAI.Chat.ChatFinishReason.Stop, cut.FinishReason);
    }

    [Fact]
    public async Task Models_endpoint_lists_the_served_model()
    {
        var models = new OpenAIModelClient(new ApiKeyCredential(ServerFixture.ApiKey), ClientOptions);
        var list = (await models.GetModelsAsync(TestContext.Current.CancellationToken)).Value;
        var model = Assert.Single(list);
        Assert.Equal(ServerFixture.ModelId, model.Id);
        Assert.Equal("pluginengine", model.OwnedBy);
        Assert.True(model.CreatedAt > DateTimeOffset.UnixEpoch);
        Assert.Equal(ServerFixture.ModelId, (await models.GetModelAsync(ServerFixture.ModelId, TestContext.Current.CancellationToken)).Value.Id);
    }

    [Fact]
    public async Task Text_completions_stream_and_not()
    {
        var body = new { model = ServerFixture.ModelId, prompt = "Once upon a time", max_tokens = 10, temperature = 0 };
        using var plain = await server.Http.PostAsync("v1/completions", Api.Json(body), TestContext.Current.CancellationToken);
        string json = await plain.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        Assert.True(plain.IsSuccessStatusCode, json);
        using var doc = JsonDocument.Parse(json);
        Assert.Equal("text_completion", doc.RootElement.GetProperty("object").GetString());
        string text = doc.RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;

        var streamBody = new { model = ServerFixture.ModelId, prompt = "Once upon a time", max_tokens = 10, temperature = 0, stream = true };
        using var request = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = Api.Json(streamBody) };
        using var streamed = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, TestContext.Current.CancellationToken);
        Assert.Equal("text/event-stream", streamed.Content.Headers.ContentType?.MediaType);
        var read = await Api.ReadStream(streamed, cancellation: TestContext.Current.CancellationToken);
        Assert.True(read.Done);
        Assert.Equal(text, read.Text);
        Assert.Equal(doc.RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString(), read.FinishReason);
    }

    [Fact]
    public async Task Health_and_metrics_parse()
    {
        using var health = await ServerFixture.NewHttp(server.BaseAddress, key: null).GetAsync("health", TestContext.Current.CancellationToken);
        Assert.Equal(200, (int)health.StatusCode);
        using var doc = JsonDocument.Parse(await health.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
        Assert.Equal("ok", doc.RootElement.GetProperty("status").GetString());
        Assert.Equal(ServerFixture.Slots, doc.RootElement.GetProperty("slots").GetInt32());

        await OpenAiChat().CompleteChatAsync(Conversation, Greedy(4), TestContext.Current.CancellationToken);
        using var metrics = await ServerFixture.NewHttp(server.BaseAddress, key: null).GetAsync("metrics", TestContext.Current.CancellationToken);
        Assert.StartsWith("text/plain", metrics.Content.Headers.ContentType?.MediaType);
        var samples = Api.ParseMetrics(await metrics.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
        Assert.True(Api.Metric(samples, "pluginengine_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}") >= 1);
        Assert.True(Api.Metric(samples, "pluginengine_requests_total{endpoint=\"/health\",status=\"200\"}") >= 1);
        Assert.True(Api.Metric(samples, "pluginengine_prompt_tokens_total{model=\"demo\"}") > 10);
        Assert.True(Api.Metric(samples, "pluginengine_generated_tokens_total{model=\"demo\"}") >= 4);
        Assert.True(Api.Metric(samples, "pluginengine_generation_seconds_total{model=\"demo\"}") > 0);
        Assert.True(Api.Metric(samples, "pluginengine_last_generation_tokens_per_second{model=\"demo\"}") > 0);
        Assert.Equal(ServerFixture.Slots, Api.Metric(samples, "pluginengine_slots{model=\"demo\"}"));
        Assert.True(samples.ContainsKey("pluginengine_queue_depth{model=\"demo\"}"));
        Assert.True(samples.ContainsKey("pluginengine_slots_busy{model=\"demo\"}"));
    }
}

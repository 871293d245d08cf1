using System.Collections.Concurrent;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Models;
using Xunit;

namespace PluginEngine.Extensions.AI.Tests;

/// <summary>
/// <see cref="PluginEngineChatClient"/> on the demo model (random weights, no template of its own: the built-in chatml),
/// CPU plugin through the repository's plugins.json.
/// </summary>
public sealed class ChatClientTests
{
    private static readonly string RepoRoot = FindRepoRoot();
    private static readonly string Plugins = Path.Combine(RepoRoot, "plugins.json");
    private static readonly string DemoPath = DemoModel.EnsureExists();

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PluginEngine.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no PluginEngine.sln above {AppContext.BaseDirectory}");
    }

    private static void Demo(PluginEngineChatClientOptions o)
    {
        o.ModelPath = DemoPath;
        o.PluginsPath = Plugins;
        o.ChatTemplate = "chatml";
        o.Threads = 1;
    }

    private static PluginEngineChatClient NewClient()
    {
        var options = new PluginEngineChatClientOptions();
        Demo(options);
        return new PluginEngineChatClient(options);
    }

    private static readonly ChatMessage[] Hello = [new(ChatRole.System, "Be brief."), new(ChatRole.User, "Hello, who are you?")];

    [Fact]
    public async Task Response_and_streaming_give_text_usage_and_finish_reason()
    {
        using var client = NewClient();
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 8 };
        var response = await client.GetResponseAsync(Hello, options, TestContext.Current.CancellationToken);
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.False(string.IsNullOrEmpty(response.Text));
        Assert.Equal("pluginengine-demo (random weights)", response.ModelId);
        Assert.NotNull(response.Usage);
        Assert.True(response.Usage!.InputTokenCount > 10);
        Assert.Equal(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
        Assert.True(response.FinishReason == ChatFinishReason.Length ? response.Usage.OutputTokenCount == 8 : response.Usage.OutputTokenCount < 8,
            $"{response.FinishReason} after {response.Usage.OutputTokenCount} tokens");

        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(Hello, options, TestContext.Current.CancellationToken)) updates.Add(u);
        Assert.True(updates.Count >= 2);
        var streamed = updates.ToChatResponse();
        Assert.Equal(response.Text, streamed.Text);
        Assert.Equal(response.FinishReason, streamed.FinishReason);
        Assert.Equal(response.Usage.InputTokenCount, streamed.Usage!.InputTokenCount);
        Assert.Equal(response.Usage.OutputTokenCount, streamed.Usage.OutputTokenCount);
        Assert.True(streamed.Usage.CachedInputTokenCount >= response.Usage.InputTokenCount - 1, "the same conversation again comes from the KV cache");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Seeded_output_equals_run_seed_for_the_same_prompt(bool streaming)
    {
        using var client = NewClient(); // fresh: the whole prompt is evaluated, as `run` does
        var options = new ChatOptions { Seed = 1234, Temperature = 0.9f, TopK = 30, TopP = 0.9f, MaxOutputTokens = 16 };
        string answer;
        if (streaming)
        {
            var parts = new List<string>();
            await foreach (var u in client.GetStreamingResponseAsync(Hello, options, TestContext.Current.CancellationToken)) parts.Add(u.Text);
            answer = string.Concat(parts);
        }
        else answer = (await client.GetResponseAsync(Hello, options, TestContext.Current.CancellationToken)).Text;

        Assert.True(ChatTemplate.TryGetBuiltIn("chatml", out var chatml));
        string prompt = chatml.Render([ChatTurn.System("Be brief."), ChatTurn.User("Hello, who are you?")], true, "<s>", "</s>");
        var output = new StringWriter();
        var error = new StringWriter();
        int code = PluginEngine.Host.Cli.Run(["--plugins", Plugins, "run", "-m", DemoPath, "-p", prompt, "-n", "16", "--seed", "1234",
            "--temp", "0.9", "--top-k", "30", "--top-p", "0.9", "-t", "1"], output, error);
        Assert.True(code == 0, error.ToString());
        Assert.Equal(prompt + answer, output.ToString().TrimEnd('\n', '\r'));
        Assert.True(answer.Length > 0);
    }

    [Fact]
    public async Task Cancellation_stops_generation_within_a_few_tokens_and_the_client_goes_on()
    {
        using var client = NewClient();
        ChatReply? finished = null;
        client.GenerationCompleted += r => finished = r;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        var options = new ChatOptions { Seed = 7, Temperature = 1.0f, MaxOutputTokens = 400 };
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var u in client.GetStreamingResponseAsync(Hello, options, cts.Token))
            {
                if (++seen == 3) cts.Cancel();
            }
        });
        Assert.NotNull(finished);
        Assert.Equal(ChatStopReason.Cancelled, finished!.StopReason);
        Assert.True(finished.GeneratedTokens <= seen + 3, $"{finished.GeneratedTokens} tokens generated; the reader cancelled after {seen} updates");

        var after = await client.GetResponseAsync(Hello, new ChatOptions { Temperature = 0, MaxOutputTokens = 4 }, TestContext.Current.CancellationToken);
        Assert.NotNull(after.Usage);
    }

    [Fact]
    public async Task In_a_pipeline_with_logging_and_a_distributed_cache_the_second_request_comes_from_the_cache()
    {
        var logs = new ConcurrentQueue<string>();
        var services = new ServiceCollection();
        services.AddLogging(b => b.SetMinimumLevel(LogLevel.Trace).AddProvider(new ListLoggerProvider(logs)));
        services.AddDistributedMemoryCache();
        services.AddPluginEngineChatClient(Demo).UseDistributedCache().UseLogging();
        await using var provider = services.BuildServiceProvider();

        var chat = provider.GetRequiredService<IChatClient>();
        var engine = chat.GetService<PluginEngineChatClient>();
        Assert.NotNull(engine);
        int generations = 0;
        engine!.GenerationCompleted += _ => Interlocked.Increment(ref generations);

        var options = new ChatOptions { Seed = 42, MaxOutputTokens = 6 };
        var first = await chat.GetResponseAsync(Hello, options, TestContext.Current.CancellationToken);
        var second = await chat.GetResponseAsync(Hello, options, TestContext.Current.CancellationToken);
        Assert.Equal(1, generations); // the second answer came from the distributed cache
        Assert.Equal(first.Text, second.Text);
        Assert.Contains(logs, l => l.Contains("GetResponseAsync", StringComparison.Ordinal));

        var metadata = chat.GetService<ChatClientMetadata>();
        Assert.Equal("PluginEngine", metadata!.ProviderName);
        Assert.Equal("pluginengine-demo (random weights)", metadata.DefaultModelId);
        var info = chat.GetService<PluginEngineModelInfo>();
        Assert.Equal("llama", info!.Architecture);
        Assert.Equal("built-in chatml", info.ChatTemplate);
        Assert.Equal(4096, info.VocabularySize);
        Assert.True(info.HasRandomWeights);
        Assert.Equal("llama", info.Metadata["general.architecture"]);
    }

    [Fact]
    public async Task The_readme_three_lines_work()
    {
        var services = new ServiceCollection();
        services.AddPluginEngineChatClient(o => { Demo(o); o.DefaultMaxOutputTokens = 3; });
        var chat = services.BuildServiceProvider().GetRequiredService<IChatClient>();
        var response = await chat.GetResponseAsync("Why is the sky blue?", cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(response.Text, response.ToString());
        Assert.True(response.Usage!.OutputTokenCount <= 3);
        (chat as IDisposable)?.Dispose();
    }

    [Fact]
    public async Task Concurrent_callers_are_queued_and_each_gets_its_own_answer()
    {
        using var client = NewClient();
        var prompts = Enumerable.Range(0, 4).Select(i => new[] { new ChatMessage(ChatRole.User, $"question number {i}") }).ToArray();
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 5 };
        var tasks = prompts.Select(p => Task.Run(async () =>
        {
            var parts = new List<string>();
            await foreach (var u in client.GetStreamingResponseAsync(p, options, TestContext.Current.CancellationToken)) parts.Add(u.Text);
            return string.Concat(parts);
        })).ToArray();
        var concurrent = await Task.WhenAll(tasks);
        // Interleaved generations would share one KV cache and corrupt each other; queued ones answer as if alone.
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = await client.GetResponseAsync(prompts[i], options, TestContext.Current.CancellationToken);
            Assert.Equal(alone.Text, concurrent[i]);
        }
    }

    [Fact]
    public async Task Bad_input_is_a_clear_error()
    {
        using var client = NewClient();
        var ct = TestContext.Current.CancellationToken;
        var empty = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([], null, ct));
        Assert.Contains("no messages", empty.Message);
        var role = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(new ChatRole("narrator"), "x")], null, ct));
        Assert.Contains("message 0 has role 'narrator'", role.Message);
        await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync(Hello, new ChatOptions { Tools = [AIFunctionFactory.Create(() => 1, "one")] }, ct));
        var topP = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => client.GetResponseAsync(Hello, new ChatOptions { TopP = 2 }, ct));
        Assert.Contains("Top-p", topP.Message);

        using var noTemplate = new PluginEngineChatClient(new PluginEngineChatClientOptions { ModelPath = DemoPath, PluginsPath = Plugins, Threads = 1 });
        var missing = await Assert.ThrowsAsync<ChatFormatException>(() => noTemplate.GetResponseAsync(Hello, null, ct));
        Assert.Contains("has no chat template", missing.Message);

        string raising = Path.Combine(Path.GetTempPath(), $"pe-raise-{Environment.ProcessId}.jinja");
        File.WriteAllText(raising, "{{ raise_exception('no system messages here') if messages[0].role == 'system' }}");
        try
        {
            using var strict = new PluginEngineChatClient(new PluginEngineChatClientOptions { ModelPath = DemoPath, PluginsPath = Plugins, Threads = 1, ChatTemplate = raising });
            var raised = await Assert.ThrowsAsync<ArgumentException>(() => strict.GetResponseAsync(Hello, null, ct));
            Assert.Contains("refused the conversation: no system messages here", raised.Message);
        }
        finally
        {
            File.Delete(raising);
        }
        var missingModel = Assert.Throws<FileNotFoundException>(() => new PluginEngineChatClient(new PluginEngineChatClientOptions { ModelPath = "/no/such.gguf", PluginsPath = Plugins }).ModelInfo);
        Assert.Contains("/no/such.gguf", missingModel.Message);
    }

    [Fact]
    public async Task A_quantized_kv_cache_is_an_option_and_contradictions_are_refused()
    {
        var ct = TestContext.Current.CancellationToken;
        var options = new PluginEngineChatClientOptions { KvCacheType = PluginEngine.Abstractions.GgmlType.Q8_0 };
        Demo(options);
        using (var client = new PluginEngineChatClient(options))
        {
            var response = await client.GetResponseAsync(Hello, new ChatOptions { Temperature = 0, MaxOutputTokens = 4 }, ct);
            Assert.False(string.IsNullOrEmpty(response.Text));
        }

        var both = new PluginEngineChatClientOptions { KvCacheType = PluginEngine.Abstractions.GgmlType.Q4_0, KvCacheF32 = true };
        Demo(both);
        using var contradicting = new PluginEngineChatClient(both);
        var e = Assert.Throws<ArgumentException>(() => contradicting.ModelInfo);
        Assert.Contains("contradict", e.Message);

        var other = new PluginEngineChatClientOptions { KvCacheType = PluginEngine.Abstractions.GgmlType.Q5_0 };
        Demo(other);
        using var unsupported = new PluginEngineChatClient(other);
        Assert.Contains("F16, F32, Q8_0, Q4_0", Assert.Throws<ArgumentException>(() => unsupported.ModelInfo).Message);
    }

    private sealed class ListLoggerProvider(ConcurrentQueue<string> lines) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new ListLogger(lines, categoryName);
        public void Dispose() { }

        private sealed class ListLogger(ConcurrentQueue<string> lines, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
            public bool IsEnabled(LogLevel logLevel) => true;
            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
                => lines.Enqueue($"{category}: {formatter(state, exception)}");
        }
    }
}

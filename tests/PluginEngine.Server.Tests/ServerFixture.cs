using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Models;
using PluginEngine.Core.Sampling;
using PluginEngine.Core.Serving;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Server.Tests;

/// <summary>
/// The demo model (random weights, no template of its own: chatml) on the CPU backend, served on a free loopback port
/// with an API key. The scheduler comes from <see cref="SchedulerFactory"/> like the serve command's, so these tests do
/// not depend on which scheduler that is; <see cref="Slots"/> is the -np they use.
/// </summary>
public sealed class ServerFixture : IAsyncLifetime
{
    public const string ApiKey = "test-key-0123";
    public const string ModelId = "demo";
    public const int SlotContext = 512;

    /// <summary>
    /// -np of the served model (PLUGINENGINE_TEST_SLOTS, default 4: the tests run over continuous batching, which checks that
    /// concurrent requests do not disturb each other — on the CPU a request's greedy text is the same alone and batched bit for
    /// bit, docs/batching.md#batch-invariance-on-the-cpu; 1 runs them on the sequential scheduler; the serve-process tests run
    /// the command's default, -np 1).
    /// </summary>
    public static int Slots { get; } = int.TryParse(Environment.GetEnvironmentVariable("PLUGINENGINE_TEST_SLOTS"), out int n) && n > 0 ? n : 4;

    public static string RepoRoot { get; } = FindRepoRoot();

    public LoadedModel Model { get; private set; } = null!;
    public ICompletionScheduler Scheduler { get; private set; } = null!;
    public OpenAiServer Server { get; private set; } = null!;
    public Uri BaseAddress { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PluginEngine.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no PluginEngine.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>
    /// The demo model's shape with Q4_0 weights on the CPU plugin (one thread), loaded through the repository's plugins.json
    /// as the CLI does. The CPU's kernels give every token the same bits whatever else is in its batch (every weight type;
    /// docs/batching.md#batch-invariance-on-the-cpu), so a request's greedy text is the same alone and batched.
    /// </summary>
    public static LoadedModel LoadDemo()
    {
        string file = DemoModel.EnsureExists(SyntheticModelSpec.Demo with { WeightType = SyntheticWeightType.Q4_0 }, $"demo-q4_0-v{DemoModel.Version}.gguf");
        var validated = LoadedModel.Validate(Core.Gguf.GgufReader.Read(file));
        var config = PluginConfigLocator.Locate(Path.Combine(RepoRoot, "plugins.json")).WithCpuThreads(1);
        var host = PluginHost.Load(config, NullLoggerFactory.Instance);
        var cpu = host.GetCpu().Devices[0];
        var load = LoadOptions.FromSwitches(true, false, HostImportSetting.Resolve(null), OperatingSystem.IsLinux());
        return LoadedModel.Load(validated, new ModelLoadOptions(cpu, cpu, -1, load), SystemMappingFactory.Instance);
    }

    public static OpenAiServer Serve(LoadedModel model, ICompletionScheduler scheduler, string? apiKey = ApiKey)
        => OpenAiServer.Create(ServedModel.For(model, scheduler, ModelId, "chatml"), new ServerOptions
        {
            Port = 0, ApiKey = apiKey, DefaultSampling = new SamplerSettings(), DefaultSeedFixed = true, ShutdownTimeout = TimeSpan.FromSeconds(2),
        });

    public async ValueTask InitializeAsync()
    {
        Model = LoadDemo();
        Scheduler = SchedulerFactory.Create(Model, new ContextOptions(SlotContext, 64), Slots, queueCapacity: 128);
        Server = Serve(Model, Scheduler);
        await Server.StartAsync();
        BaseAddress = new Uri(Server.ListeningAddress + "/");
        Http = NewHttp(BaseAddress);
    }

    public static HttpClient NewHttp(Uri baseAddress, string? key = ApiKey)
    {
        // No draining of an abandoned response: a client that stops reading closes its connection, as a browser tab or a
        // killed process does (HttpClient would otherwise read the rest of the answer to reuse the connection).
        var http = new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = baseAddress, Timeout = TimeSpan.FromMinutes(5) };
        if (key is not null) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return http;
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.StopAsync();
        await Server.DisposeAsync();
        Scheduler.Dispose();
        Model.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class ServerCollection : ICollectionFixture<ServerFixture>
{
    public const string Name = "served demo model";
}

/// <summary>Requests and server-sent events, read the way any client reads them.</summary>
public static class Api
{
    public static StringContent Json(object body) => new(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");

    public static object Chat(string user, int maxTokens, bool stream = false, long seed = 7, double temperature = 0) => new Dictionary<string, object>
    {
        ["model"] = ServerFixture.ModelId,
        ["messages"] = new[] { new { role = "user", content = user } },
        ["max_tokens"] = maxTokens, ["temperature"] = temperature, ["seed"] = seed, ["stream"] = stream,
        ["stream_options"] = new { include_usage = true },
    };

    /// <summary>A streamed chat answer: its text, finish reason, usage, and how many content chunks carried it.</summary>
    public sealed record Streamed(string Text, string? FinishReason, int? CompletionTokens, int ContentChunks, bool Done);

    /// <summary>Reads SSE events until [DONE] or the end; <paramref name="onContent"/> sees each content piece.</summary>
    public static async Task<Streamed> ReadStream(HttpResponseMessage response, Action<string>? onContent = null, CancellationToken cancellation = default)
    {
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellation));
        var text = new StringBuilder();
        string? finish = null;
        int? tokens = null;
        int chunks = 0;
        while (await reader.ReadLineAsync(cancellation) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line[6..];
            if (data == "[DONE]") return new Streamed(text.ToString(), finish, tokens, chunks, true);
            using var chunk = JsonDocument.Parse(data);
            if (chunk.RootElement.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                tokens = usage.GetProperty("completion_tokens").GetInt32();
            foreach (var choice in chunk.RootElement.GetProperty("choices").EnumerateArray())
            {
                string? piece = choice.TryGetProperty("delta", out var delta)
                    ? delta.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null
                    : choice.GetProperty("text").GetString();
                if (!string.IsNullOrEmpty(piece))
                {
                    text.Append(piece);
                    chunks++;
                    onContent?.Invoke(piece);
                }
                if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choice.GetProperty("finish_reason").GetString();
            }
        }
        return new Streamed(text.ToString(), finish, tokens, chunks, false);
    }

    /// <summary>The text and finish reason of a non-streamed chat answer.</summary>
    public static async Task<(string Text, string FinishReason, int CompletionTokens)> ReadAnswer(HttpResponseMessage response)
    {
        string body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {body}");
        using var doc = JsonDocument.Parse(body);
        var choice = doc.RootElement.GetProperty("choices")[0];
        return (choice.GetProperty("message").GetProperty("content").GetString()!, choice.GetProperty("finish_reason").GetString()!,
            doc.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    /// <summary>Prometheus text: every sample line parsed as (name{labels}, value); malformed lines fail the test.</summary>
    public static Dictionary<string, double> ParseMetrics(string text)
    {
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line.StartsWith('#')) continue;
            int space = line.LastIndexOf(' ');
            Assert.True(space > 0, $"metrics line without a value: {line}");
            Assert.True(double.TryParse(line[(space + 1)..], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value), $"metrics line with a bad value: {line}");
            Assert.Matches(@"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*=""([^""\\]|\\.)*"",?)*\})?$", line[..space]);
            samples[line[..space]] = value;
        }
        return samples;
    }

    public static double Metric(Dictionary<string, double> samples, string key) => samples.TryGetValue(key, out double v) ? v : 0;
}

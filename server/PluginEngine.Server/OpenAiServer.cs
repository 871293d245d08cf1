using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Serving;

namespace PluginEngine.Server;

/// <summary>
/// The OpenAI-compatible HTTP server over one <see cref="ServedModel"/> (docs/serve.md): chat and text completions,
/// streamed (SSE) or not, <c>/v1/models</c>, <c>/health</c>, <c>/metrics</c> and the chat page at <c>/</c>. Requests
/// are formatted here and run by the model's <see cref="ICompletionScheduler"/>; which scheduler that is does not matter
/// to this class. On shutdown (SIGTERM, Ctrl+C, <see cref="StopAsync"/>) it stops accepting, lets in-flight requests run
/// for <see cref="ServerOptions.ShutdownTimeout"/>, then cancels them (their streams still end properly).
/// </summary>
public sealed class OpenAiServer : IAsyncDisposable
{
    private readonly ServedModel _model;
    private readonly ServerOptions _options;
    private readonly byte[]? _keyHash;
    private Task _drain = Task.CompletedTask;
    private volatile bool _draining;

    private OpenAiServer(WebApplication app, ServedModel model, ServerOptions options)
    {
        App = app;
        _model = model;
        _options = options;
        _keyHash = options.ApiKey is { } key ? SHA256.HashData(Encoding.UTF8.GetBytes(key)) : null;
    }

    public WebApplication App { get; }

    public ServerMetrics Metrics { get; } = new();

    /// <summary>The bound address once started ("http://127.0.0.1:PORT"; the real port when <see cref="ServerOptions.Port"/> was 0).</summary>
    public string ListeningAddress => App.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();

    /// <summary>Builds the server; <see cref="StartAsync"/> or <see cref="RunAsync"/> starts it.</summary>
    public static OpenAiServer Create(ServedModel model, ServerOptions options, ILoggerProvider? logging = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        if (logging is not null) builder.Logging.AddProvider(logging);
        builder.WebHost.UseKestrel(k =>
        {
            k.Listen(options.Address, options.Port);
            k.AddServerHeader = false;
        });
        // Kestrel waits this long for in-flight requests: the grace period, then time for cancelled streams to end.
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = options.ShutdownTimeout + TimeSpan.FromSeconds(5));
        var server = new OpenAiServer(builder.Build(), model, options);
        server.Map();
        return server;
    }

    public Task StartAsync(CancellationToken cancellation = default) => App.StartAsync(cancellation);

    /// <summary>Runs until SIGTERM/Ctrl+C (or <see cref="StopAsync"/>), then shuts down gracefully.</summary>
    public Task RunAsync() => App.RunAsync();

    public Task StopAsync(CancellationToken cancellation = default) => App.StopAsync(cancellation);

    /// <summary>After <see cref="StartAsync"/>: completes once SIGTERM/Ctrl+C (or <see cref="StopAsync"/>) stopped the server.</summary>
    public Task WaitForShutdownAsync() => App.WaitForShutdownAsync();

    /// <summary>Completes when the scheduler has drained after shutdown began.</summary>
    public Task Drained => _drain;

    public async ValueTask DisposeAsync()
    {
        await App.DisposeAsync().ConfigureAwait(false);
        await _drain.ConfigureAwait(false);
    }

    private void Map()
    {
        var app = App;
        app.Lifetime.ApplicationStopping.Register(() =>
        {
            _draining = true;
            var grace = new CancellationTokenSource(_options.ShutdownTimeout);
            _drain = _model.Scheduler.DrainAsync(grace.Token).ContinueWith(_ => grace.Dispose(), TaskScheduler.Default);
        });
        app.Use(async (context, next) =>
        {
            string path = context.Request.Path.Value ?? "/";
            try
            {
                if (path.StartsWith("/v1/", StringComparison.Ordinal) && _keyHash is not null) Authorize(context.Request);
                await next(context).ConfigureAwait(false);
            }
            catch (ApiError e)
            {
                await WriteError(context, e).ConfigureAwait(false);
            }
            catch (Exception) when (context.RequestAborted.IsCancellationRequested)
            {
                // The client left; nothing to answer.
            }
            catch (Exception e)
            {
                if (!context.Response.HasStarted)
                    await WriteError(context, new ApiError(500, $"internal error: {e.GetType().Name}: {e.Message}", "server_error", null, "internal_error")).ConfigureAwait(false);
            }
            finally
            {
                Metrics.CountRequest(EndpointLabel(path), context.Response.StatusCode);
            }
        });

        app.MapGet("/health", (HttpContext context) =>
        {
            // Readiness: a draining replica says so, and the load balancer stops sending it requests (docs/deploy.md).
            if (_draining) return Results.Json(new JsonObject { ["status"] = "shutting down" }, statusCode: 503);
            var s = _model.Scheduler.Statistics;
            return Results.Json(new JsonObject { ["status"] = "ok", ["model"] = _model.Id, ["slots"] = s.Slots, ["slots_busy"] = s.BusySlots, ["queued"] = s.Queued });
        });
        app.MapGet("/metrics", () => Results.Text(Metrics.Format(_model.Scheduler.Statistics, _model.Id), "text/plain; version=0.0.4; charset=utf-8"));
        app.MapGet("/v1/models", () => Results.Text(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(ModelObject()),
        }.ToJsonString(), "application/json"));
        app.MapGet("/v1/models/{id}", (string id) => id == _model.Id
            ? Results.Text(ModelObject().ToJsonString(), "application/json")
            : throw UnknownModel(id));
        app.MapPost("/v1/chat/completions", (HttpContext context) => Complete(context, chat: true));
        app.MapPost("/v1/completions", (HttpContext context) => Complete(context, chat: false));
        app.MapGet("/", (HttpContext context) => Page(context, "index.html", "text/html; charset=utf-8"));
        app.MapGet("/app.js", (HttpContext context) => Page(context, "app.js", "text/javascript; charset=utf-8"));
        app.MapGet("/style.css", (HttpContext context) => Page(context, "style.css", "text/css; charset=utf-8"));
        app.MapFallback((HttpContext context) => throw new ApiError(404, $"no endpoint {context.Request.Method} {context.Request.Path} (see docs/serve.md#endpoints)", "invalid_request_error", null, "not_found"));
    }

    private static string EndpointLabel(string path) => path switch
    {
        "/v1/chat/completions" or "/v1/completions" or "/v1/models" or "/health" or "/metrics" or "/" => path,
        _ when path.StartsWith("/v1/models/", StringComparison.Ordinal) => "/v1/models/{id}",
        "/app.js" or "/style.css" => "/",
        _ => "other",
    };

    private JsonObject ModelObject() => new()
    {
        ["id"] = _model.Id, ["object"] = "model", ["created"] = _model.CreatedUnixSeconds, ["owned_by"] = "pluginengine",
    };

    /// <summary>Bearer key check; the hashes make the comparison constant-time whatever the lengths (docs/serve.md#authentication).</summary>
    private void Authorize(HttpRequest request)
    {
        string? header = request.Headers.Authorization;
        if (string.IsNullOrEmpty(header))
            throw new ApiError(401, "missing API key: send the header Authorization: Bearer KEY (the server runs with --api-key)", "invalid_request_error", null, "missing_api_key");
        const string Scheme = "Bearer ";
        string given = header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase) ? header[Scheme.Length..].Trim() : header.Trim();
        if (!CryptographicOperations.FixedTimeEquals(SHA256.HashData(Encoding.UTF8.GetBytes(given)), _keyHash))
            throw new ApiError(401, "incorrect API key", "invalid_request_error", null, "invalid_api_key");
    }

    private static async Task WriteError(HttpContext context, ApiError e)
    {
        if (context.Response.HasStarted) return;
        context.Response.StatusCode = e.Status;
        context.Response.ContentType = "application/json";
        if (e.Status == 503) context.Response.Headers.RetryAfter = "1";
        await context.Response.WriteAsync(e.ToJson(), context.RequestAborted).ConfigureAwait(false);
    }

    private static readonly Assembly PageAssembly = typeof(OpenAiServer).Assembly;

    private static async Task Page(HttpContext context, string name, string contentType)
    {
        await using var stream = PageAssembly.GetManifestResourceStream("wwwroot/" + name)
            ?? throw new InvalidOperationException($"the page file {name} is not embedded in {PageAssembly.GetName().Name}");
        context.Response.ContentType = contentType;
        context.Response.Headers.CacheControl = "no-cache";
        await stream.CopyToAsync(context.Response.Body, context.RequestAborted).ConfigureAwait(false);
    }

    private static ApiError UnknownModel(string name)
        => new(404, $"the model '{name}' does not exist here", "invalid_request_error", "model", "model_not_found");

    /// <summary>One chat or text completion, from the request body to the response (docs/serve.md#endpoints).</summary>
    private async Task Complete(HttpContext context, bool chat)
    {
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted).ConfigureAwait(false);
        }
        catch (JsonException e)
        {
            throw ApiError.BadRequest($"the body is not valid JSON: {e.Message}", null, "invalid_json");
        }
        OpenAiRequest request;
        using (document)
            request = chat
                ? OpenAiRequestReader.ReadChat(document.RootElement, _options.DefaultSampling, _options.DefaultSeedFixed)
                : OpenAiRequestReader.ReadCompletion(document.RootElement, _options.DefaultSampling, _options.DefaultSeedFixed);
        if (request.Model is { } name && name != _model.Id) throw UnknownModel(name);

        int[] prompt;
        try
        {
            prompt = chat ? _model.Formatter.Encode(request.Messages!) : _model.Formatter.EncodePlainText(request.Prompt!);
        }
        catch (ChatFormatException e)
        {
            throw ApiError.BadRequest($"$.messages: the chat template cannot format this conversation: {e.Message}", "messages", "invalid_value");
        }
        if (prompt.Length == 0) throw ApiError.BadRequest(chat ? "$.messages: the conversation formats to no tokens" : "$.prompt: empty (no tokens)", chat ? "messages" : "prompt");
        var scheduler = _model.Scheduler;
        int room = scheduler.SlotContextSize - prompt.Length;
        if (room < 0) throw TooLong(prompt.Length, scheduler.SlotContextSize);
        // A limit beyond the context is clamped, not refused: the answer ends with finish_reason "length" when the
        // context fills (docs/serve.md#max-tokens).
        int maxTokens = (int)Math.Min(request.MaxTokens ?? long.MaxValue, room);

        var completion = new CompletionRequest
        {
            PromptTokens = prompt, Sampling = request.Sampling, MaxTokens = maxTokens, StopSequences = request.Stop, EndTokens = _model.EndTokens,
        };
        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (request.Stream) await Stream(context, completion, request, chat, id, created).ConfigureAwait(false);
        else
        {
            var result = await Submit(completion, null, context.RequestAborted).ConfigureAwait(false);
            Record(result);
            var choice = new JsonObject { ["index"] = 0 };
            if (chat) choice["message"] = new JsonObject { ["role"] = "assistant", ["content"] = result.Text, ["refusal"] = null };
            else choice["text"] = result.Text;
            choice["logprobs"] = null;
            choice["finish_reason"] = ServerMetrics.FinishReason(result.StopReason);
            var body = new JsonObject
            {
                ["id"] = id, ["object"] = chat ? "chat.completion" : "text_completion", ["created"] = created, ["model"] = _model.Id,
                ["choices"] = new JsonArray(choice), ["usage"] = Usage(result),
            };
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync(body.ToJsonString(), context.RequestAborted).ConfigureAwait(false);
        }
    }

    private static ApiError TooLong(int promptTokens, int context)
        => new(413, $"the prompt has {promptTokens} tokens but a slot's context holds {context} (serve -c); shorten the conversation", "invalid_request_error", "messages", "context_length_exceeded");

    /// <summary>Submits to the scheduler, turning its synchronous refusals into API errors.</summary>
    private Task<CompletionResult> Submit(CompletionRequest completion, Action<string>? onText, CancellationToken cancellation)
    {
        try
        {
            return _model.Scheduler.SubmitAsync(completion, onText, cancellation);
        }
        catch (SchedulerQueueFullException e)
        {
            throw new ApiError(503, e.Message, "server_error", null, "queue_full");
        }
        catch (ObjectDisposedException)
        {
            throw new ApiError(503, "the server is shutting down; retry on another replica", "server_error", null, "shutting_down");
        }
        catch (ContextOverflowException)
        {
            throw TooLong(completion.PromptTokens.Count, _model.Scheduler.SlotContextSize);
        }
    }

    private void Record(CompletionResult result)
        => Metrics.CountCompletion(result, result.StopReason == ChatStopReason.Cancelled ? "cancelled" : ServerMetrics.FinishReason(result.StopReason));

    private static JsonObject Usage(CompletionResult result) => new()
    {
        ["prompt_tokens"] = result.PromptTokens, ["completion_tokens"] = result.GeneratedTokens, ["total_tokens"] = result.PromptTokens + result.GeneratedTokens,
    };

    /// <summary>
    /// Server-sent events: a chunk per piece of text as the scheduler produces it, a last chunk with the finish reason,
    /// the usage chunk when asked, then <c>data: [DONE]</c>. The scheduler's callback only queues text; this request's
    /// thread writes it, so a slow client never stalls the scheduler.
    /// </summary>
    private async Task Stream(HttpContext context, CompletionRequest completion, OpenAiRequest request, bool chat, string id, long created)
    {
        var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var task = Submit(completion, piece => pieces.Writer.TryWrite(piece), context.RequestAborted);
        // Counted when the scheduler is done, also when the client has gone and nothing more can be written.
        _ = task.ContinueWith(t =>
        {
            if (t.IsCompletedSuccessfully) Record(t.Result);
            pieces.Writer.TryComplete();
        }, TaskScheduler.Default);

        var response = context.Response;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        response.Headers["X-Accel-Buffering"] = "no"; // proxies must not hold the stream back
        var aborted = context.RequestAborted;

        JsonObject Chunk(JsonObject? delta, string? text, string? finish)
        {
            var choice = new JsonObject { ["index"] = 0 };
            if (chat) choice["delta"] = delta ?? new JsonObject();
            else choice["text"] = text ?? "";
            choice["logprobs"] = null;
            choice["finish_reason"] = finish;
            var chunk = new JsonObject
            {
                ["id"] = id, ["object"] = chat ? "chat.completion.chunk" : "text_completion", ["created"] = created, ["model"] = _model.Id,
                ["choices"] = new JsonArray(choice),
            };
            if (request.IncludeUsage) chunk["usage"] = null;
            return chunk;
        }
        async Task Send(JsonNode chunk)
        {
            await response.WriteAsync("data: " + chunk.ToJsonString() + "\n\n", aborted).ConfigureAwait(false);
            await response.Body.FlushAsync(aborted).ConfigureAwait(false);
        }

        if (chat) await Send(Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "" }, null, null)).ConfigureAwait(false);
        await foreach (var piece in pieces.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
            await Send(chat ? Chunk(new JsonObject { ["content"] = piece }, null, null) : Chunk(null, piece, null)).ConfigureAwait(false);
        var result = await task.ConfigureAwait(false);
        await Send(Chunk(null, null, ServerMetrics.FinishReason(result.StopReason))).ConfigureAwait(false);
        if (request.IncludeUsage)
            await Send(new JsonObject
            {
                ["id"] = id, ["object"] = chat ? "chat.completion.chunk" : "text_completion", ["created"] = created, ["model"] = _model.Id,
                ["choices"] = new JsonArray(), ["usage"] = Usage(result),
            }).ConfigureAwait(false);
        await response.WriteAsync("data: [DONE]\n\n", aborted).ConfigureAwait(false);
        await response.Body.FlushAsync(aborted).ConfigureAwait(false);
    }
}

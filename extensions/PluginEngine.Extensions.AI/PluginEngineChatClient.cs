using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Sampling;

namespace PluginEngine.Extensions.AI;

/// <summary>
/// <see cref="IChatClient"/> over one GGUF model loaded by PluginEngine. Messages are formatted with the model's chat
/// template (or <see cref="PluginEngineChatClientOptions.ChatTemplate"/>), the answer ends at an end-of-turn token, a
/// stop sequence or the token limit. Requests are queued: one generation at a time per client (one KV cache), in arrival
/// order; a request whose conversation extends the previous one reuses the cached prefix. Safe to call from many threads.
/// <see cref="ChatOptions"/> mapping: Temperature, TopP, TopK, MaxOutputTokens, Seed and StopSequences as named;
/// PresencePenalty/FrequencyPenalty become the sampler's repeat penalty 1 + max(presence, frequency) over the last 64
/// tokens (it has one multiplicative penalty, llama.cpp's); AdditionalProperties "min_p", "repeat_penalty" and
/// "repeat_last_n" set those directly. Tools and JSON response formats are not supported (NotSupportedException).
/// </summary>
public sealed class PluginEngineChatClient : IChatClient
{
    private readonly PluginEngineChatClientOptions _options;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _logger;
    private readonly Lazy<State> _state;
    private readonly SemaphoreSlim _queue = new(1, 1);
    private bool _disposed;

    /// <summary>The loaded model, its context and the conversation state (created on first use).</summary>
    private sealed class State(LoadedModel model, LlamaContext context, ChatSession session, PluginEngineModelInfo info) : IDisposable
    {
        public LoadedModel Model { get; } = model;
        public LlamaContext Context { get; } = context;
        public ChatSession Session { get; } = session;
        public PluginEngineModelInfo Info { get; } = info;

        public void Dispose()
        {
            Context.Dispose();
            Model.Dispose();
        }
    }

    public PluginEngineChatClient(PluginEngineChatClientOptions options, ILoggerFactory? loggers = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _loggers = loggers ?? NullLoggerFactory.Instance;
        _logger = _loggers.CreateLogger<PluginEngineChatClient>();
        _state = new Lazy<State>(Load, LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>Raised after every generation (also a cancelled one) with what it did; for metrics and tests.</summary>
    public event Action<ChatReply>? GenerationCompleted;

    /// <summary>The loaded model's description (loads the model when it is not loaded yet).</summary>
    public PluginEngineModelInfo ModelInfo => GetState().Info;

    private State Load()
    {
        var model = PluginEngineModelLoader.Load(_options, _loggers, out _);
        LlamaContext? context = null;
        try
        {
            var hp = model.HyperParameters;
            int ctx = _options.ContextSize ?? Math.Min(hp.ContextLength, 4096);
            if (ctx <= 0 || ctx > hp.ContextLength) throw new ArgumentOutOfRangeException(nameof(PluginEngineChatClientOptions.ContextSize), ctx, $"context size must be in 1..{hp.ContextLength} (the model's context length)");
            var kvType = _options.ResolveKvCacheType();
            context = model.CreateContext(new ContextOptions(ctx, Math.Max(1, _options.BatchSize), kvType));
            var session = ChatSession.ForModel(model, context, _options.ChatTemplate);
            var info = new PluginEngineModelInfo(model.Name, model.File.Path, hp.Architecture, hp.BlockCount, hp.VocabularySize, hp.ContextLength, ctx,
                session.Template.Name, model.Schedule.Describe(kvType).TrimEnd(), model.HasRandomWeights, Metadata(model.File));
            _logger.LogInformation("loaded {Model} ({Path}); chat template: {Template}; {Schedule}", info.Name, info.Path, info.ChatTemplate, info.Schedule);
            return new State(model, context, session, info);
        }
        catch
        {
            context?.Dispose();
            model.Dispose();
            throw;
        }
    }

    private static Dictionary<string, string> Metadata(GgufFile file)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (key, value) in file.Metadata)
            result[key] = value.Type switch
            {
                GgufValueType.Array => $"[{value.ElementType} × {value.Count}]",
                GgufValueType.String => value.AsString(),
                _ => value.ToString() ?? "",
            };
        return result;
    }

    private State GetState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _state.Value;
    }

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        var (reply, info) = await RunQueuedAsync(request, onText: null, cancellationToken).ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, reply.Text))
        {
            ModelId = info.Name,
            FinishReason = FinishReason(reply),
            Usage = Usage(reply),
            CreatedAt = DateTimeOffset.UtcNow,
            ResponseId = Guid.NewGuid().ToString("N"),
        };
    }

    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        string responseId = Guid.NewGuid().ToString("N");
        var channel = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken); // also stops when the reader leaves early
        var producer = Task.Run(async () =>
        {
            try { return await RunQueuedAsync(request, text => channel.Writer.TryWrite(text), stop.Token).ConfigureAwait(false); }
            finally { channel.Writer.TryComplete(); }
        }, CancellationToken.None);

        string? modelId = _state.IsValueCreated ? _state.Value.Info.Name : null;
        try
        {
            await foreach (var text in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false))
            {
                modelId ??= _state.IsValueCreated ? _state.Value.Info.Name : null;
                yield return new ChatResponseUpdate(ChatRole.Assistant, text) { ResponseId = responseId, ModelId = modelId };
            }
            var (reply, info) = await producer.ConfigureAwait(false);
            yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(Usage(reply))])
            {
                ResponseId = responseId, ModelId = info.Name, FinishReason = FinishReason(reply), CreatedAt = DateTimeOffset.UtcNow,
            };
        }
        finally
        {
            stop.Cancel();
            try { await producer.ConfigureAwait(false); } catch { /* reported above when the reader stayed; otherwise the reader left */ }
        }
    }

    /// <summary>A request checked and converted before it waits in the queue, so bad input fails at once.</summary>
    private sealed record Request(List<ChatTurn> Turns, SamplerSettings Sampling, ChatGenerationOptions Generation);

    private Request Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = new List<ChatTurn>();
        int index = 0;
        foreach (var m in messages)
        {
            if (m is null) throw new ArgumentException($"message {index} is null", nameof(messages));
            string role = m.Role.Value.ToLowerInvariant();
            if (!ChatRoles.All.Contains(role))
                throw new ArgumentException($"message {index} has role '{m.Role.Value}'; the roles are {string.Join(", ", ChatRoles.All)}", nameof(messages));
            if (m.Contents.FirstOrDefault(c => c is not TextContent) is { } other)
                throw new NotSupportedException($"message {index} holds {other.GetType().Name}; only text is supported");
            turns.Add(new ChatTurn(role, m.Text));
            index++;
        }
        if (turns.Count == 0) throw new ArgumentException("the conversation has no messages; give at least one", nameof(messages));
        if (options?.Tools is { Count: > 0 }) throw new NotSupportedException("tools (function calling) are not supported by PluginEngineChatClient");
        if (options?.ResponseFormat is ChatResponseFormatJson) throw new NotSupportedException("JSON response formats are not supported by PluginEngineChatClient");

        var defaults = new SamplerSettings();
        float penalty = Math.Max(options?.PresencePenalty ?? 0, options?.FrequencyPenalty ?? 0);
        if (penalty < 0) throw new ArgumentOutOfRangeException(nameof(options), penalty, "PresencePenalty and FrequencyPenalty must be 0 or more (they map to the repeat penalty 1 + max of the two)");
        var sampling = defaults with
        {
            Temperature = options?.Temperature ?? defaults.Temperature,
            TopP = options?.TopP ?? defaults.TopP,
            TopK = options?.TopK ?? defaults.TopK,
            MinP = Additional(options, "min_p", defaults.MinP),
            RepeatPenalty = Additional(options, "repeat_penalty", penalty > 0 ? 1 + penalty : defaults.RepeatPenalty),
            RepeatLastN = (int)Additional(options, "repeat_last_n", defaults.RepeatLastN),
            Seed = options?.Seed is { } seed ? unchecked((ulong)seed) : (ulong)Random.Shared.NextInt64(),
        };
        try { sampling.Validate(); }
        catch (ArgumentOutOfRangeException e) { throw new ArgumentOutOfRangeException(nameof(options), e.ActualValue, e.Message); }

        int maxTokens = options?.MaxOutputTokens ?? _options.DefaultMaxOutputTokens;
        if (maxTokens < 0) throw new ArgumentOutOfRangeException(nameof(options), maxTokens, "MaxOutputTokens must be 0 or more");
        var generation = new ChatGenerationOptions
        {
            MaxTokens = maxTokens,
            StopSequences = options?.StopSequences?.ToArray() ?? [],
            ParseSpecialInMessages = _options.ParseSpecialInMessages,
        };
        return new Request(turns, sampling, generation);
    }

    private static float Additional(ChatOptions? options, string key, float fallback)
    {
        if (options?.AdditionalProperties is not { } props || !props.TryGetValue(key, out var value) || value is null) return fallback;
        try { return Convert.ToSingle(value, System.Globalization.CultureInfo.InvariantCulture); }
        catch (Exception e) when (e is FormatException or InvalidCastException) { throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{key}\"] = {value}: expected a number", nameof(options), e); }
    }

    /// <summary>Waits for its turn in the queue, then generates on a worker thread.</summary>
    private async Task<(ChatReply Reply, PluginEngineModelInfo Info)> RunQueuedAsync(Request request, Action<string>? onText, CancellationToken cancellation)
    {
        await _queue.WaitAsync(cancellation).ConfigureAwait(false);
        try
        {
            var reply = await Task.Run(() =>
            {
                var state = GetState();
                try { return (state.Session.Complete(request.Turns, new Sampler(request.Sampling), request.Generation, onText, cancellation), state.Info); }
                catch (ChatFormatException e) { throw new ArgumentException(e.Message, "messages", e); }
            }, CancellationToken.None).ConfigureAwait(false);
            GenerationCompleted?.Invoke(reply.Item1);
            if (reply.Item1.StopReason == ChatStopReason.Cancelled) throw new OperationCanceledException(cancellation);
            return reply;
        }
        finally
        {
            _queue.Release();
        }
    }

    private static ChatFinishReason FinishReason(ChatReply reply) => reply.StopReason switch
    {
        ChatStopReason.EndOfTurn or ChatStopReason.StopSequence => ChatFinishReason.Stop,
        _ => ChatFinishReason.Length,
    };

    private static UsageDetails Usage(ChatReply reply) => new()
    {
        InputTokenCount = reply.PromptTokens,
        OutputTokenCount = reply.GeneratedTokens,
        TotalTokenCount = reply.PromptTokens + reply.GeneratedTokens,
        CachedInputTokenCount = reply.PromptTokens - reply.EvaluatedPromptTokens,
    };

    /// <summary>
    /// <see cref="ChatClientMetadata"/> (provider "PluginEngine", the model's name), <see cref="PluginEngineModelInfo"/>,
    /// the <see cref="LoadedModel"/> itself, or this client; null for anything else. Loads the model when needed.
    /// </summary>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType == typeof(ChatClientMetadata))
        {
            var info = GetState().Info;
            return new ChatClientMetadata("PluginEngine", new Uri("file://" + Path.GetFullPath(info.Path)), info.Name);
        }
        if (serviceType == typeof(PluginEngineModelInfo)) return GetState().Info;
        if (serviceType == typeof(LoadedModel)) return GetState().Model;
        return null;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _queue.Wait();
        try
        {
            _disposed = true;
            if (_state.IsValueCreated) _state.Value.Dispose();
        }
        finally
        {
            _queue.Release();
        }
    }
}

using System.Diagnostics;
using System.Text;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Sampling;
using PluginEngine.Core.Serving;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Core.Chat;

/// <summary>Why an answer ended.</summary>
public enum ChatStopReason
{
    /// <summary>The model produced an end-of-turn token.</summary>
    EndOfTurn,
    /// <summary>The answer reached one of the stop sequences (cut before it).</summary>
    StopSequence,
    /// <summary>The answer reached the token limit.</summary>
    Length,
    /// <summary>The context (KV cache) is full.</summary>
    ContextFull,
    /// <summary>The caller cancelled; the answer so far is kept.</summary>
    Cancelled,
}

/// <summary>What one answer needs besides the sampler.</summary>
public sealed record ChatGenerationOptions
{
    /// <summary>Most tokens to generate (the end-of-turn token counts).</summary>
    public int MaxTokens { get; init; } = 1024;

    /// <summary>Texts that end the answer when it reaches them (the answer is cut before them).</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>Parse control-token text in messages as special tokens (off: user text stays text).</summary>
    public bool ParseSpecialInMessages { get; init; }
}

/// <summary>An answer and what it cost.</summary>
/// <param name="PromptTokens">Tokens of the whole formatted conversation.</param>
/// <param name="EvaluatedPromptTokens">Those actually evaluated for this answer (the rest came from the KV cache).</param>
/// <param name="GeneratedTokens">Tokens sampled (including the end-of-turn token).</param>
/// <param name="Tokens">The sampled token ids, in order (including the end-of-turn token).</param>
public sealed record ChatReply(string Text, ChatStopReason StopReason, int PromptTokens, int EvaluatedPromptTokens, int GeneratedTokens,
    TimeSpan PromptTime, TimeSpan GenerationTime, IReadOnlyList<int> Tokens)
{
    public double PromptTokensPerSecond => EvaluatedPromptTokens / Math.Max(PromptTime.TotalSeconds, 1e-9);
    public double GenerationTokensPerSecond => GeneratedTokens / Math.Max(GenerationTime.TotalSeconds, 1e-9);
}

/// <summary>
/// A conversation with a model over one <see cref="LlamaContext"/>: formats messages with the chat template, evaluates
/// only what the KV cache does not already hold (the new turn, not the history), samples the answer until an end-of-turn
/// token, a stop sequence, the token limit or cancellation, and streams its text. <see cref="Send"/> keeps a history
/// (the <c>chat</c> command); <see cref="Complete"/> answers a whole message list and reuses the longest cached prefix
/// (the IChatClient). Not thread-safe: one caller at a time.
/// </summary>
public sealed class ChatSession
{
    private readonly LlamaContext _context;
    private readonly ITokenizer _tokenizer;
    private readonly ChatPromptFormatter _formatter;
    private readonly List<int> _cached = []; // tokens in the KV cache, in order (Count == _context.Position)
    private readonly List<ChatTurn> _history = [];
    private readonly float[] _logits;
    private int? _pending;                   // sampled, its text is in _cachedText, not yet evaluated
    private string? _cachedText;              // the text _cached + _pending stand for; null when unknown

    public ChatSession(LlamaContext context, ITokenizer tokenizer, ChatTemplate template, IReadOnlySet<int> endOfTurnTokens, string? systemPrompt = null)
    {
        _context = context;
        _tokenizer = tokenizer;
        _formatter = new ChatPromptFormatter(tokenizer, template);
        EndOfTurn = endOfTurnTokens;
        SystemPrompt = systemPrompt;
        _logits = new float[context.VocabularySize];
        Reset();
    }

    /// <summary>A session for a loaded model: its own template (or <paramref name="templateOverride"/>) and end-of-turn tokens.</summary>
    public static ChatSession ForModel(LoadedModel model, LlamaContext context, string? templateOverride = null, string? systemPrompt = null)
        => new(context, model.Tokenizer, ChatTemplate.Resolve(model.File, templateOverride), EndOfTurnTokens.FromModel(model.File, model.Tokenizer), systemPrompt);

    public ChatTemplate Template => _formatter.Template;

    /// <summary>What turns this session's messages into prompt tokens (template, BOS, special-token protection).</summary>
    public ChatPromptFormatter Formatter => _formatter;

    /// <summary>Token ids that end an answer.</summary>
    public IReadOnlySet<int> EndOfTurn { get; }

    /// <summary>The system message every conversation of <see cref="Send"/> starts with (null: none).</summary>
    public string? SystemPrompt { get; }

    /// <summary>The conversation so far (<see cref="Send"/>).</summary>
    public IReadOnlyList<ChatTurn> History => _history;

    /// <summary>Tokens evaluated through the context since this session was created (prompt turns and generated tokens).</summary>
    public long EvaluatedTokens { get; private set; }

    /// <summary>Tokens the KV cache holds for this conversation.</summary>
    public int CachedTokens => _cached.Count;

    /// <summary>Forgets the conversation and the KV cache (the system prompt stays).</summary>
    public void Reset()
    {
        _history.Clear();
        if (!string.IsNullOrEmpty(SystemPrompt)) _history.Add(ChatTurn.System(SystemPrompt));
        _cached.Clear();
        _pending = null;
        _cachedText = null;
        _context.Reset();
    }

    /// <summary>Adds a user message, answers it and adds the answer (also a partial one) to the history.</summary>
    public ChatReply Send(string userMessage, Sampler sampler, ChatGenerationOptions options, Action<string>? onText = null, CancellationToken cancellation = default)
    {
        var turns = new List<ChatTurn>(_history) { ChatTurn.User(userMessage) };
        var reply = Complete(turns, sampler, options, onText, cancellation);
        _history.Add(ChatTurn.User(userMessage));
        _history.Add(ChatTurn.Assistant(reply.Text));
        return reply;
    }

    /// <summary>Answers the conversation <paramref name="messages"/> (the last message is usually the user's), reusing the cached prefix.</summary>
    public ChatReply Complete(IReadOnlyList<ChatTurn> messages, Sampler sampler, ChatGenerationOptions options, Action<string>? onText = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentNullException.ThrowIfNull(options);
        if (options.MaxTokens < 0) throw new ArgumentOutOfRangeException(nameof(options), options.MaxTokens, "MaxTokens must be 0 or more");
        var (text, breaks) = _formatter.Render(messages, options.ParseSpecialInMessages);

        var clock = Stopwatch.StartNew();
        var (evaluate, promptTokens) = PlanPrompt(text, breaks);
        _cachedText = null; // until this answer is complete: an exception leaves the cache described by tokens only
        if (_cached.Count + evaluate.Count > _context.ContextSize)
            throw new ContextOverflowException($"the conversation needs {_cached.Count + evaluate.Count} tokens but the context holds {_context.ContextSize}; start over (/reset) or raise the context size (-c)");
        Evaluate(evaluate);
        var promptTime = clock.Elapsed;

        clock.Restart();
        var answer = new StringBuilder();          // everything decoded (the cache holds it all)
        var filter = new StopSequenceFilter(options.StopSequences); // what the caller sees
        var decoder = _tokenizer.CreateStreamingDecoder();
        int generated = 0;
        var sampled = new List<int>();
        ChatStopReason reason;
        while (true)
        {
            if (_pending is { } last)
            {
                if (_cached.Count >= _context.ContextSize) { reason = ChatStopReason.ContextFull; break; }
                _pending = null;
                Evaluate([last]);
            }
            if (cancellation.IsCancellationRequested) { reason = ChatStopReason.Cancelled; break; }
            if (generated >= options.MaxTokens) { reason = ChatStopReason.Length; break; }
            if (_cached.Count >= _context.ContextSize) { reason = ChatStopReason.ContextFull; break; }

            int recent = Math.Min(_cached.Count, sampler.Settings.RepeatLastN);
            int next = sampler.Sample(_logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_cached)[^recent..]);
            generated++;
            sampled.Add(next);
            if (EndOfTurn.Contains(next)) { reason = ChatStopReason.EndOfTurn; break; }
            _pending = next;
            string piece = decoder.Append(next);
            answer.Append(piece);
            Hand(filter.Append(piece), onText);
            if (filter.Stopped) { reason = ChatStopReason.StopSequence; break; }
        }
        string rest = decoder.Flush();
        answer.Append(rest);
        Hand(filter.Append(rest), onText);
        Hand(filter.Flush(), onText);
        if (filter.Stopped) reason = ChatStopReason.StopSequence;
        _cachedText = text + answer.ToString();
        string reply = filter.Text;
        if (reason == ChatStopReason.StopSequence) _cachedText = null; // the cache holds the stop text the reply lacks
        return new ChatReply(reply, reason, promptTokens, evaluate.Count, generated, promptTime, clock.Elapsed, sampled);
    }

    /// <summary>The prompt tokens of <paramref name="messages"/> as a fresh session would evaluate them (for tests and tools).</summary>
    public int[] Encode(IReadOnlyList<ChatTurn> messages, bool parseSpecialInMessages = false) => _formatter.Encode(messages, parseSpecialInMessages);

    private static void Hand(string piece, Action<string>? onText)
    {
        if (piece.Length > 0) onText?.Invoke(piece);
    }

    /// <summary>
    /// The tokens to evaluate for prompt <paramref name="text"/>: when it extends the text the cache stands for and the
    /// extension starts at a special token (so tokenizing it alone is exact), only the pending token and the extension;
    /// otherwise the whole prompt is tokenized and the cache is rewound to the longest common token prefix.
    /// </summary>
    private (List<int> Evaluate, int PromptTokens) PlanPrompt(string text, int[] breaks)
    {
        if (_cachedText is { } cached && text.StartsWith(cached, StringComparison.Ordinal) && (_pending is not null || _cached.Count > 0))
        {
            int offset = cached.Length;
            var shifted = breaks.Where(b => b > offset).Select(b => b - offset).ToArray();
            var suffix = _tokenizer.Encode(text[offset..], addBos: false, shifted);
            if (suffix.Length == 0 || _tokenizer.GetTokenType(suffix[0]) == TokenType.Control)
            {
                var list = new List<int>(suffix.Length + 1);
                if (_pending is { } p) list.Add(p);
                list.AddRange(suffix);
                _pending = null;
                if (list.Count == 0) list.Add(RewindOne());
                return (list, _cached.Count + list.Count);
            }
        }

        var full = _formatter.Encode(new ChatPrompt(text, breaks));
        if (full.Length == 0) throw new ChatFormatException("the formatted conversation encodes to no tokens");
        _pending = null;
        int common = 0;
        while (common < _cached.Count && common < full.Length && _cached[common] == full[common]) common++;
        if (common == full.Length) common--; // everything cached: evaluate the last token again for its logits
        _context.Rewind(common);
        _cached.RemoveRange(common, _cached.Count - common);
        return (full[common..].ToList(), full.Length);
    }

    private int RewindOne()
    {
        int last = _cached[^1];
        _cached.RemoveAt(_cached.Count - 1);
        _context.Rewind(_cached.Count);
        return last;
    }

    private void Evaluate(List<int> tokens)
    {
        if (tokens.Count == 0) return;
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(tokens);
        _context.Evaluate(span, _logits);
        _cached.AddRange(tokens);
        EvaluatedTokens += tokens.Count;
    }
}

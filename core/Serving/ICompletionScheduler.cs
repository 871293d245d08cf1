using PluginEngine.Core.Chat;
using PluginEngine.Core.Sampling;

namespace PluginEngine.Core.Serving;

/// <summary>One completion to run: a tokenized prompt, how to sample, and when to stop (docs/serve.md#schedulers).</summary>
public sealed record CompletionRequest
{
    /// <summary>The prompt's tokens (BOS included when the model wants it; a chat prompt already rendered by its template).</summary>
    public required IReadOnlyList<int> PromptTokens { get; init; }

    /// <summary>How tokens are chosen; each request has its own sampler, seeded from these settings.</summary>
    public SamplerSettings Sampling { get; init; } = SamplerSettings.Greedy;

    /// <summary>Most tokens to generate (an end token counts).</summary>
    public int MaxTokens { get; init; } = 256;

    /// <summary>Texts that end the answer (cut before them).</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>Token ids that end the answer (EOS, the model's end-of-turn tokens); they are not part of the text.</summary>
    public IReadOnlySet<int> EndTokens { get; init; } = new HashSet<int>();
}

/// <summary>What a completion produced and what it cost.</summary>
/// <param name="Text">The answer (cut before a stop sequence).</param>
/// <param name="Tokens">Sampled token ids, in order (an end token included).</param>
/// <param name="QueueTime">From submission until the request got a slot.</param>
public sealed record CompletionResult(string Text, IReadOnlyList<int> Tokens, ChatStopReason StopReason, int PromptTokens,
    int GeneratedTokens, TimeSpan QueueTime, TimeSpan PromptTime, TimeSpan GenerationTime);

/// <summary>A snapshot of a scheduler's counters (for /metrics and the bench).</summary>
/// <param name="Slots">Sequences that can be decoded together.</param>
/// <param name="BusySlots">Slots holding a request now.</param>
/// <param name="Queued">Requests waiting for a slot.</param>
/// <param name="RequestsCompleted">Requests finished, for any reason (cancelled included).</param>
/// <param name="PromptTokens">Prompt tokens evaluated so far.</param>
/// <param name="GeneratedTokens">Tokens sampled so far.</param>
/// <param name="Steps">Forward passes so far.</param>
public readonly record struct SchedulerStatistics(int Slots, int BusySlots, int Queued, long RequestsCompleted, long PromptTokens,
    long GeneratedTokens, long Steps);

/// <summary>The scheduler's queue is full; the caller should retry later (HTTP 503).</summary>
public sealed class SchedulerQueueFullException(string message) : Exception(message);

/// <summary>
/// Runs completions on one loaded model: requests wait in a bounded queue, get one of <see cref="Slots"/> sequence slots
/// (each with its own part of the KV cache), and are decoded by a single worker thread. Implementations:
/// <c>SequentialCompletionScheduler</c> (one request at a time, the baseline) and
/// <c>BatchedCompletionScheduler</c> (continuous batching: every busy slot advances in one forward pass).
/// Thread-safe: any thread may submit.
/// </summary>
public interface ICompletionScheduler : IDisposable
{
    /// <summary>Sequences decoded together.</summary>
    int Slots { get; }

    /// <summary>Positions one slot's KV cache holds: prompt + generated tokens of one request must fit.</summary>
    int SlotContextSize { get; }

    /// <summary>Current counters.</summary>
    SchedulerStatistics Statistics { get; }

    /// <summary>
    /// Queues <paramref name="request"/>. <paramref name="onText"/> receives the answer's text as it is sampled (stop
    /// sequences held back), on the scheduler's thread: it must return quickly. The task completes with the result when the
    /// answer ends; cancelling <paramref name="cancellation"/> ends it at the next step with <see cref="ChatStopReason.Cancelled"/>
    /// and the text so far (the slot is freed), also while still queued. Throws at once (synchronously):
    /// <see cref="SchedulerQueueFullException"/> when the queue is full, <see cref="Inference.ContextOverflowException"/>
    /// when the prompt does not fit <see cref="SlotContextSize"/>, <see cref="ArgumentException"/> for an invalid request,
    /// <see cref="ObjectDisposedException"/> after shutdown began.
    /// </summary>
    Task<CompletionResult> SubmitAsync(CompletionRequest request, Action<string>? onText = null, CancellationToken cancellation = default);

    /// <summary>
    /// Graceful shutdown: refuses new requests, lets running ones finish until <paramref name="cancellation"/> fires (then
    /// cancels them, each completing with <see cref="ChatStopReason.Cancelled"/>), and stops the worker.
    /// </summary>
    Task DrainAsync(CancellationToken cancellation);
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Sampling;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Core.Serving;

/// <summary>
/// The baseline <see cref="ICompletionScheduler"/> (<c>serve -np 1</c>): one <see cref="LlamaContext"/>, one slot, one worker
/// thread that runs queued requests one after another in arrival order (docs/serve.md#schedulers). Each request starts
/// from an empty KV cache, with its own sampler and stop-sequence filter, so its text does not depend on what ran before.
/// A prompt is evaluated in chunks of the context's batch size, and cancellation is checked between chunks and between
/// tokens. Owns the context it creates (not the model).
/// </summary>
public sealed class SequentialCompletionScheduler : ICompletionScheduler
{
    private readonly LlamaContext _context;
    private readonly ITokenizer _tokenizer;
    private readonly int _queueCapacity;
    private readonly LinkedList<Job> _queue = new();   // guarded by _lock
    private readonly object _lock = new();
    private readonly SemaphoreSlim _available = new(0);
    private readonly CancellationTokenSource _abort = new(); // fired when the drain's grace ends, or on Dispose
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Thread _worker;
    private readonly float[] _logits;
    private readonly int[] _history;                    // the running request's tokens (prompt + sampled), for the repeat penalty
    private bool _closed;                               // no new requests (drain or dispose began); guarded by _lock
    private readonly SchedulerCounters _counters = new();
    private bool _disposed;

    /// <summary>A queued or running request and the task its caller awaits.</summary>
    private sealed class Job(CompletionRequest request, Action<string>? onText, CancellationToken cancellation)
    {
        public CompletionRequest Request { get; } = request;
        public Action<string>? OnText { get; } = onText;
        public CancellationToken Cancellation { get; } = cancellation;
        public TaskCompletionSource<CompletionResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public long SubmittedAt { get; } = Stopwatch.GetTimestamp();
        public LinkedListNode<Job>? Node { get; set; }
        public CancellationTokenRegistration Registration { get; set; }
    }

    /// <param name="model">The model to run (not owned: dispose it after this scheduler).</param>
    /// <param name="contextOptions">The slot's context: its size is <see cref="SlotContextSize"/>; its batch size is the prompt chunk.</param>
    /// <param name="queueCapacity">Requests that may wait besides the running one; more are refused with <see cref="SchedulerQueueFullException"/>.</param>
    public SequentialCompletionScheduler(LoadedModel model, ContextOptions contextOptions, int queueCapacity)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(contextOptions);
        ArgumentOutOfRangeException.ThrowIfNegative(queueCapacity);
        _tokenizer = model.Tokenizer;
        _queueCapacity = queueCapacity;
        _context = model.CreateContext(contextOptions);
        _logits = new float[_context.VocabularySize];
        _history = new int[_context.ContextSize];
        _worker = new Thread(WorkerLoop) { IsBackground = true, Name = "completion scheduler" };
        _worker.Start();
    }

    public int Slots => 1;

    public int SlotContextSize => _context.ContextSize;

    public SchedulerStatistics Statistics
    {
        get
        {
            int queued;
            lock (_lock) queued = _queue.Count;
            return _counters.Snapshot(Slots, queued);
        }
    }

    public Task<CompletionResult> SubmitAsync(CompletionRequest request, Action<string>? onText = null, CancellationToken cancellation = default)
    {
        Validate(request);
        var job = new Job(request, onText, cancellation);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            if (_counters.QueueFull(_queue.Count, _queueCapacity, Slots))
                throw new SchedulerQueueFullException($"the queue is full ({_queueCapacity} requests waiting for {Slots} slot); retry later");
            job.Node = _queue.AddLast(job);
        }
        // Registered after queuing: a token that is already cancelled completes the job at once, through the same path.
        job.Registration = cancellation.Register(() => CancelQueued(job));
        _available.Release();
        return job.Completion.Task;
    }

    /// <summary>The synchronous checks of <see cref="ICompletionScheduler.SubmitAsync"/>: empty or too long prompts, bad ids or settings.</summary>
    private void Validate(CompletionRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(request.PromptTokens);
        ArgumentNullException.ThrowIfNull(request.Sampling);
        if (request.PromptTokens.Count == 0) throw new ArgumentException("the prompt has no tokens", nameof(request));
        if (request.MaxTokens < 0) throw new ArgumentException($"MaxTokens is {request.MaxTokens}; it must be 0 or more", nameof(request));
        if (request.PromptTokens.Count > SlotContextSize)
            throw new ContextOverflowException($"the prompt has {request.PromptTokens.Count} tokens but a slot's context holds {SlotContextSize}");
        int vocab = _tokenizer.VocabularySize;
        foreach (int t in request.PromptTokens)
            if ((uint)t >= (uint)vocab) throw new ArgumentException($"prompt token id {t} is outside the vocabulary (0..{vocab - 1})", nameof(request));
        request.Sampling.Validate();
    }

    /// <summary>A cancelled request still in the queue leaves it and completes now; a running one is ended by the worker.</summary>
    private void CancelQueued(Job job)
    {
        lock (_lock)
        {
            if (job.Node?.List is null) return; // already taken by the worker (or finished)
            _queue.Remove(job.Node);
        }
        _counters.RequestCompleted();
        var waited = Stopwatch.GetElapsedTime(job.SubmittedAt);
        job.Completion.TrySetResult(new CompletionResult("", [], ChatStopReason.Cancelled, job.Request.PromptTokens.Count, 0, waited, TimeSpan.Zero, TimeSpan.Zero));
    }

    public async Task DrainAsync(CancellationToken cancellation)
    {
        lock (_lock) _closed = true;
        _available.Release(); // wake the worker so it notices the queue may already be empty
        using (cancellation.Register(() => _abort.Cancel()))
            await _stopped.Task.ConfigureAwait(false);
    }

    private void WorkerLoop()
    {
        try
        {
            while (true)
            {
                _available.Wait();
                Job? job;
                lock (_lock)
                {
                    if (_queue.First is { } first)
                    {
                        job = first.Value;
                        _queue.RemoveFirst();
                    }
                    else if (_closed) break;
                    else continue;
                }
                job.Registration.Dispose(); // the worker owns the job now; its cancellation is checked between steps
                _counters.AddBusy(1);
                try
                {
                    job.Completion.TrySetResult(Run(job));
                }
                catch (Exception e)
                {
                    job.Completion.TrySetException(e);
                }
                finally
                {
                    _counters.AddBusy(-1);
                    _counters.RequestCompleted();
                }
            }
            // Closed with nothing queued: anything that slipped in cannot be run.
            lock (_lock)
                foreach (var left in _queue) left.Completion.TrySetException(new ObjectDisposedException(nameof(SequentialCompletionScheduler)));
        }
        finally
        {
            _stopped.TrySetResult();
        }
    }

    private bool Cancelled(Job job) => job.Cancellation.IsCancellationRequested || _abort.IsCancellationRequested;

    /// <summary>One request from an empty cache to its end (mirrors <see cref="ChatSession.Complete"/>'s loop, without the cache reuse).</summary>
    private CompletionResult Run(Job job)
    {
        var request = job.Request;
        var queueTime = Stopwatch.GetElapsedTime(job.SubmittedAt);
        int promptCount = request.PromptTokens.Count;
        var sampled = new List<int>(Math.Min(request.MaxTokens, _context.ContextSize - promptCount) + 1);
        var filter = new StopSequenceFilter(request.StopSequences);
        var decoder = _tokenizer.CreateStreamingDecoder();
        var sampler = new Sampler(request.Sampling);
        _context.Reset();
        for (int i = 0; i < promptCount; i++) _history[i] = request.PromptTokens[i];

        var clock = Stopwatch.StartNew();
        int evaluated = 0;
        while (evaluated < promptCount && !Cancelled(job))
        {
            int n = Math.Min(_context.BatchSize, promptCount - evaluated);
            _context.Evaluate(_history.AsSpan(evaluated, n), _logits);
            evaluated += n;
            _counters.PromptEvaluated(n);
            _counters.StepDone();
        }
        var promptTime = clock.Elapsed;
        clock.Restart();
        if (evaluated < promptCount)
            return new CompletionResult("", [], ChatStopReason.Cancelled, promptCount, 0, queueTime, promptTime, TimeSpan.Zero);

        int length = promptCount; // tokens in _history
        int? pending = null;      // sampled, not yet evaluated
        ChatStopReason reason;
        while (true)
        {
            if (pending is { } last)
            {
                if (_context.Position >= _context.ContextSize) { reason = ChatStopReason.ContextFull; break; }
                pending = null;
                _context.Evaluate(MemoryMarshal.CreateReadOnlySpan(ref _history[length - 1], 1), _logits);
                _counters.StepDone();
            }
            if (Cancelled(job)) { reason = ChatStopReason.Cancelled; break; }
            if (sampled.Count >= request.MaxTokens) { reason = ChatStopReason.Length; break; }
            if (length >= _context.ContextSize) { reason = ChatStopReason.ContextFull; break; }

            int recent = Math.Min(length, sampler.Settings.RepeatLastN);
            int next = sampler.Sample(_logits, _history.AsSpan(length - recent, recent));
            sampled.Add(next);
            _counters.TokenGenerated();
            if (request.EndTokens.Contains(next)) { reason = ChatStopReason.EndOfTurn; break; }
            _history[length++] = next;
            pending = next;
            Hand(filter.Append(decoder.Append(next)), job.OnText);
            if (filter.Stopped) { reason = ChatStopReason.StopSequence; break; }
        }
        Hand(filter.Append(decoder.Flush()), job.OnText);
        Hand(filter.Flush(), job.OnText);
        if (filter.Stopped) reason = ChatStopReason.StopSequence;
        return new CompletionResult(filter.Text, sampled, reason, promptCount, sampled.Count, queueTime, promptTime, clock.Elapsed);
    }

    private static void Hand(string piece, Action<string>? onText)
    {
        if (piece.Length > 0) onText?.Invoke(piece);
    }

    /// <summary>Cancels everything (queued and running requests complete as cancelled), stops the worker and frees the context.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        lock (_lock) _closed = true;
        _abort.Cancel();
        List<Job> queued;
        lock (_lock) queued = [.. _queue];
        foreach (var job in queued) CancelQueued(job);
        _available.Release();
        _worker.Join();
        _context.Dispose();
        _abort.Dispose();
        _available.Dispose();
    }
}

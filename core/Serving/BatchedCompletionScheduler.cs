using System.Diagnostics;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Sampling;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Core.Serving;

/// <summary>
/// Continuous batching over one multi-sequence <see cref="LlamaContext"/> (docs/batching.md#the-scheduler): one worker thread
/// runs steps; each step admits queued requests into free KV slots, drops cancelled ones, and evaluates one token of every
/// decoding slot plus chunks of prompts being evaluated, all in one forward pass of at most <see cref="LlamaContext.BatchSize"/>
/// tokens (decode tokens first, so a long prompt never stalls the streams). Each request has its own sampler, streaming
/// decoder and stop-sequence filter; a finished or cancelled request frees its slot for the next step.
/// </summary>
public sealed class BatchedCompletionScheduler : ICompletionScheduler
{
    private readonly LlamaContext _context;
    private readonly ITokenizer _tokenizer;
    private readonly bool _ownsContext;
    private readonly int _queueCapacity;
    private readonly object _lock = new();
    private readonly Queue<Job> _queue = new();          // waiting for a slot (guarded by _lock)
    private readonly Job?[] _slots;                      // [S] the request each slot holds; touched by the worker only
    private readonly int[] _batchTokens;                 // [BatchSize] the step's tokens, reused
    private readonly BatchSequence[] _batch;             // [S] the step's sequences, reused
    private readonly Job[] _batchJobs;                   // [S] the request of each of _batch's entries, reused
    private readonly float[] _logits;                    // [S, V] logits of the entries that want them, reused
    private readonly SemaphoreSlim _wake = new(0);       // released when work may be waiting (submit, cancellation, drain)
    private readonly Thread _worker;
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _closed;                       // no new requests (drain or dispose began)
    private volatile bool _cancelAll;                    // cancel every running and queued request at the next step
    private readonly SchedulerCounters _counters = new();

    /// <summary>A scheduler over <paramref name="context"/> (its <see cref="LlamaContext.Sequences"/> are the slots); the caller keeps owning the context.</summary>
    public BatchedCompletionScheduler(LlamaContext context, ITokenizer tokenizer, int queueCapacity)
        : this(context, tokenizer, queueCapacity, ownsContext: false)
    {
    }

    /// <summary>
    /// A scheduler with its own context of <paramref name="slots"/> KV slots of <paramref name="contextOptions"/>'s
    /// ContextSize positions each, on <paramref name="model"/>'s devices (disposed with the scheduler; the model is not).
    /// </summary>
    public BatchedCompletionScheduler(LoadedModel model, ContextOptions contextOptions, int slots, int queueCapacity)
        : this(CreateContext(model, contextOptions, slots), model.Tokenizer, queueCapacity, ownsContext: true)
    {
    }

    /// <summary>What the <c>serve</c> command calls for <c>-np N</c>: a scheduler of <paramref name="slots"/> slots on <paramref name="model"/>.</summary>
    public static BatchedCompletionScheduler Create(LoadedModel model, ContextOptions contextOptions, int slots, int queueCapacity)
        => new(model, contextOptions, slots, queueCapacity);

    private static LlamaContext CreateContext(LoadedModel model, ContextOptions options, int slots)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        return model.CreateContext(options, slots);
    }

    private BatchedCompletionScheduler(LlamaContext context, ITokenizer tokenizer, int queueCapacity, bool ownsContext)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (queueCapacity < 0) { if (ownsContext) context.Dispose(); throw new ArgumentOutOfRangeException(nameof(queueCapacity), queueCapacity, "queue capacity must be 0 or more"); }
        _context = context;
        _tokenizer = tokenizer;
        _ownsContext = ownsContext;
        _queueCapacity = queueCapacity;
        int slots = context.Sequences;
        _slots = new Job?[slots];
        _batchTokens = new int[context.BatchSize];
        _batch = new BatchSequence[slots];
        _batchJobs = new Job[slots];
        _logits = new float[(long)slots * context.VocabularySize];
        _worker = new Thread(Run) { IsBackground = true, Name = "pluginengine batched scheduler" };
        _worker.Start();
    }

    public int Slots => _slots.Length;

    public int SlotContextSize => _context.ContextSize;

    /// <summary>The context the requests run in (its counters: transfers, op fallbacks).</summary>
    public LlamaContext Context => _context;

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
        ArgumentNullException.ThrowIfNull(request);
        var prompt = request.PromptTokens ?? throw new ArgumentException("the request has no prompt tokens", nameof(request));
        if (prompt.Count == 0) throw new ArgumentException("the prompt has no tokens", nameof(request));
        if (request.MaxTokens < 0) throw new ArgumentOutOfRangeException(nameof(request), request.MaxTokens, "MaxTokens must be 0 or more");
        ArgumentNullException.ThrowIfNull(request.Sampling);
        int vocab = _context.VocabularySize;
        foreach (int t in prompt)
            if ((uint)t >= (uint)vocab) throw new ArgumentException($"prompt token id {t} is outside the vocabulary (0..{vocab - 1})", nameof(request));
        if (prompt.Count > SlotContextSize)
            throw new ContextOverflowException($"the prompt has {prompt.Count} tokens but a slot's context holds {SlotContextSize}");

        var job = new Job(request, onText, cancellation, _tokenizer.CreateStreamingDecoder(), _context.ContextSize);
        // A queued request that is cancelled completes at once; a running one at the next step (the worker checks the token).
        if (cancellation.CanBeCanceled)
            job.Registration = cancellation.Register(static state => { var (scheduler, j) = ((BatchedCompletionScheduler, Job))state!; scheduler.CancelQueued(j); }, (this, job));
        lock (_lock)
        {
            if (_closed || _counters.QueueFull(_queue.Count, _queueCapacity, Slots))
            {
                job.Registration.Dispose();
                ObjectDisposedException.ThrowIf(_closed, this);
                throw new SchedulerQueueFullException($"the queue is full ({_queueCapacity} requests waiting for {Slots} slots); retry later");
            }
            _queue.Enqueue(job);
        }
        _wake.Release();
        return job.Completion.Task;
    }

    private void CancelQueued(Job job)
    {
        lock (_lock)
        {
            if (job.Slot >= 0 || job.Done || !_queue.Contains(job)) { _wake.Release(); return; } // running (or not yet queued): the worker sees the token
            var keep = _queue.Where(j => j != job).ToArray(); // rare: a queued request cancelled
            _queue.Clear();
            foreach (var j in keep) _queue.Enqueue(j);
        }
        Finish(job, ChatStopReason.Cancelled);
    }

    public Task DrainAsync(CancellationToken cancellation)
    {
        lock (_lock) _closed = true;
        var registration = cancellation.Register(() => { _cancelAll = true; _wake.Release(); });
        _wake.Release();
        return _stopped.Task.ContinueWith(_ => registration.Dispose(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    public void Dispose()
    {
        lock (_lock) _closed = true;
        _cancelAll = true;
        _wake.Release();
        if (Thread.CurrentThread != _worker) _worker.Join();
        if (_ownsContext) _context.Dispose();
        // _wake is not disposed: a late cancellation callback may still release it (a SemaphoreSlim without a wait handle holds nothing).
    }

    // ---- The worker (docs/batching.md#the-scheduler) ----

    private void Run()
    {
        try
        {
            while (true)
            {
                Admit();
                if (_counters.Busy == 0)
                {
                    bool idle;
                    lock (_lock) idle = _queue.Count == 0;
                    if (idle && _closed) break;
                    if (idle) { _wake.Wait(); continue; }
                    continue;
                }
                Step();
            }
        }
        catch (Exception e)
        {
            // A bug in the loop itself: fail everything rather than leave callers waiting forever.
            FailAll(e);
        }
        finally
        {
            _stopped.TrySetResult();
        }
    }

    /// <summary>Drops cancelled requests and moves queued ones into free slots.</summary>
    private void Admit()
    {
        for (int s = 0; s < _slots.Length; s++)
            if (_slots[s] is { } job && (_cancelAll || job.Cancellation.IsCancellationRequested)) Release(s, ChatStopReason.Cancelled);
        while (true)
        {
            Job? job;
            lock (_lock)
            {
                if (_cancelAll && _queue.Count > 0) job = _queue.Dequeue();
                else if (_cancelAll) return;
                else job = null;
            }
            if (job is not null) { Finish(job, ChatStopReason.Cancelled); continue; }
            lock (_lock)
            {
                int free = Array.IndexOf(_slots, null);
                if (free < 0 || !_queue.TryDequeue(out job)) return;
                job.Slot = free;
            }
            if (job.Cancellation.IsCancellationRequested) { job.Slot = -1; Finish(job, ChatStopReason.Cancelled); continue; }
            _slots[job.Slot] = job;
            _counters.AddBusy(1);
            _context.ClearSequence(job.Slot);
            job.Admitted = Stopwatch.GetTimestamp();
        }
    }

    /// <summary>One forward pass: a token of every decoding slot, then prompt chunks in slot order up to the token budget.</summary>
    private void Step()
    {
        int budget = _batchTokens.Length, tokens = 0, entries = 0;
        for (int s = 0; s < _slots.Length && tokens < budget; s++)
        {
            if (_slots[s] is not { Pending: >= 0 } job) continue;
            _batchTokens[tokens++] = job.Pending;
            _batch[entries] = new BatchSequence(s, 1, WantsLogits: true);
            _batchJobs[entries++] = job;
        }
        for (int s = 0; s < _slots.Length && tokens < budget; s++)
        {
            if (_slots[s] is not { } job || job.PromptDone) continue;
            int chunk = Math.Min(budget - tokens, job.Request.PromptTokens.Count - job.PromptEvaluated);
            for (int i = 0; i < chunk; i++) _batchTokens[tokens + i] = job.Request.PromptTokens[job.PromptEvaluated + i];
            tokens += chunk;
            bool last = job.PromptEvaluated + chunk == job.Request.PromptTokens.Count;
            _batch[entries] = new BatchSequence(s, chunk, WantsLogits: last);
            _batchJobs[entries++] = job;
        }
        if (entries == 0) return;

        try
        {
            _context.EvaluateBatch(_batchTokens.AsSpan(0, tokens), _batch.AsSpan(0, entries), _logits);
        }
        catch (Exception e)
        {
            // Nothing of the batch was kept in a usable state: fail its requests and free their slots; the others go on.
            for (int i = 0; i < entries; i++) Release(_batch[i].Slot, ChatStopReason.Cancelled, e);
            return;
        }
        _counters.StepDone();

        int row = 0;
        for (int i = 0; i < entries; i++)
        {
            var job = _batchJobs[i];
            var entry = _batch[i];
            if (job.PromptDone)
            {
                job.History[job.HistoryCount++] = job.Pending; // the pending token is now in the cache
                job.Pending = -1;
            }
            else
            {
                job.PromptEvaluated += entry.Tokens;
                _counters.PromptEvaluated(entry.Tokens);
                if (!entry.WantsLogits) continue;
                job.PromptDone = true;
                job.PromptEnd = Stopwatch.GetTimestamp();
            }
            var logits = _logits.AsSpan(row++ * _context.VocabularySize, _context.VocabularySize);
            try
            {
                if (Sample(job, logits) is { } reason) Release(entry.Slot, reason);
            }
            catch (Exception e)
            {
                Release(entry.Slot, ChatStopReason.Cancelled, e);
            }
        }
    }

    /// <summary>Samples the next token of <paramref name="job"/>; returns why it ends, or null when it goes on.</summary>
    private ChatStopReason? Sample(Job job, ReadOnlySpan<float> logits)
    {
        if (job.Generated >= job.Request.MaxTokens) return ChatStopReason.Length;
        int recent = Math.Min(job.HistoryCount, job.Sampler.Settings.RepeatLastN);
        int next = job.Sampler.Sample(logits, job.History.AsSpan(job.HistoryCount - recent, recent));
        job.Generated++;
        job.Sampled.Add(next);
        _counters.TokenGenerated();
        if (job.Request.EndTokens.Contains(next)) return ChatStopReason.EndOfTurn;
        Hand(job, job.Filter.Append(job.Decoder.Append(next)));
        if (job.Filter.Stopped) return ChatStopReason.StopSequence;
        if (_context.SequencePosition(job.Slot) >= _context.ContextSize) return ChatStopReason.ContextFull;
        if (job.Generated >= job.Request.MaxTokens) return ChatStopReason.Length;
        job.Pending = next;
        return null;
    }

    private static void Hand(Job job, string piece)
    {
        if (piece.Length > 0) job.OnText?.Invoke(piece);
    }

    /// <summary>Ends the request in <paramref name="slot"/> and frees the slot (its cache is cleared when the next request takes it).</summary>
    private void Release(int slot, ChatStopReason reason, Exception? error = null)
    {
        var job = _slots[slot]!;
        _slots[slot] = null;
        _counters.AddBusy(-1);
        Finish(job, reason, error);
    }

    private void Finish(Job job, ChatStopReason reason, Exception? error = null)
    {
        if (job.Done) return;
        job.Done = true;
        job.Registration.Dispose();
        _counters.RequestCompleted();
        if (error is not null) { job.Completion.TrySetException(error); return; }
        try
        {
            if (reason != ChatStopReason.StopSequence || !job.Filter.Stopped)
            {
                Hand(job, job.Filter.Append(job.Decoder.Flush()));
                Hand(job, job.Filter.Flush());
            }
            if (job.Filter.Stopped) reason = ChatStopReason.StopSequence;
        }
        catch (Exception e)
        {
            job.Completion.TrySetException(e);
            return;
        }
        long now = Stopwatch.GetTimestamp(), admitted = job.Admitted == 0 ? now : job.Admitted, promptEnd = job.PromptEnd == 0 ? now : job.PromptEnd;
        job.Completion.TrySetResult(new CompletionResult(job.Filter.Text, job.Sampled, reason, job.Request.PromptTokens.Count, job.Generated,
            Stopwatch.GetElapsedTime(job.Submitted, admitted), Stopwatch.GetElapsedTime(admitted, promptEnd), Stopwatch.GetElapsedTime(promptEnd, now)));
    }

    private void FailAll(Exception e)
    {
        for (int s = 0; s < _slots.Length; s++)
            if (_slots[s] is not null) Release(s, ChatStopReason.Cancelled, e);
        lock (_lock)
        {
            _closed = true;
            while (_queue.TryDequeue(out var job)) Finish(job, ChatStopReason.Cancelled, e);
        }
    }

    /// <summary>One request's state: set up at submission (allocations here, never per step).</summary>
    private sealed class Job(CompletionRequest request, Action<string>? onText, CancellationToken cancellation, StreamingDecoder decoder, int contextSize)
    {
        public readonly CompletionRequest Request = request;
        public readonly Action<string>? OnText = onText;
        public readonly CancellationToken Cancellation = cancellation;
        public readonly TaskCompletionSource<CompletionResult> Completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public readonly Sampler Sampler = new(request.Sampling);
        public readonly StopSequenceFilter Filter = new(request.StopSequences ?? []);
        public readonly StreamingDecoder Decoder = decoder;
        public readonly List<int> Sampled = new(Math.Min(request.MaxTokens, contextSize) + 1);
        public readonly int[] History = Init(request.PromptTokens, contextSize); // [ctx] prompt, then each generated token once evaluated
        public readonly long Submitted = Stopwatch.GetTimestamp();
        public CancellationTokenRegistration Registration;
        public int HistoryCount = request.PromptTokens.Count;
        public int Slot = -1, PromptEvaluated, Generated, Pending = -1;
        public bool PromptDone, Done;
        public long Admitted, PromptEnd;

        private static int[] Init(IReadOnlyList<int> prompt, int contextSize)
        {
            var history = new int[contextSize];
            for (int i = 0; i < prompt.Count; i++) history[i] = prompt[i];
            return history;
        }
    }
}

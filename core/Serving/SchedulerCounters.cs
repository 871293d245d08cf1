namespace PluginEngine.Core.Serving;

/// <summary>
/// The counters both completion schedulers keep (busy slots, requests, tokens, steps) and the queue-full rule they share.
/// The worker writes them; any thread may read a <see cref="Snapshot"/> (docs/serve.md#schedulers).
/// </summary>
internal sealed class SchedulerCounters
{
    private int _busy;
    private long _completed, _promptTokens, _generatedTokens, _steps;

    /// <summary>Slots holding a request now.</summary>
    public int Busy => Volatile.Read(ref _busy);

    public void AddBusy(int delta) => Interlocked.Add(ref _busy, delta);

    public void RequestCompleted() => Interlocked.Increment(ref _completed);

    public void PromptEvaluated(long tokens) => Interlocked.Add(ref _promptTokens, tokens);

    public void TokenGenerated() => Interlocked.Increment(ref _generatedTokens);

    public void StepDone() => Interlocked.Increment(ref _steps);

    /// <summary>
    /// Whether a new request must be refused: <paramref name="queued"/> requests wait, and those the worker will put into a
    /// free slot at its next step are not waiting, so only the rest count against <paramref name="capacity"/>.
    /// </summary>
    public bool QueueFull(int queued, int capacity, int slots) => queued >= capacity + (slots - Busy);

    public SchedulerStatistics Snapshot(int slots, int queued)
        => new(slots, Busy, queued, Interlocked.Read(ref _completed), Interlocked.Read(ref _promptTokens),
               Interlocked.Read(ref _generatedTokens), Interlocked.Read(ref _steps));
}

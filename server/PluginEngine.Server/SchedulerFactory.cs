using PluginEngine.Core.Inference;
using PluginEngine.Core.Serving;

namespace PluginEngine.Server;

/// <summary>The one place that picks the completion scheduler for <c>-np</c> (docs/serve.md#schedulers).</summary>
public static class SchedulerFactory
{
    /// <summary>
    /// <paramref name="slots"/> = 1: <see cref="SequentialCompletionScheduler"/>. More slots need continuous batching
    /// (BatchedCompletionScheduler), which is not in this build yet: <see cref="NotSupportedException"/> says so.
    /// </summary>
    /// <param name="slotContext">Each slot's context (its size is what one request's prompt + answer may use).</param>
    /// <param name="queueCapacity">Requests that may wait for a slot before new ones get HTTP 503.</param>
    public static ICompletionScheduler Create(LoadedModel model, ContextOptions slotContext, int slots, int queueCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        return slots switch
        {
            1 => new SequentialCompletionScheduler(model, slotContext, queueCapacity),
            _ => throw new NotSupportedException($"-np {slots}: serving several sequences at once needs continuous batching, which is not available yet in this build; use -np 1 (requests are then queued and answered one at a time)"),
        };
    }
}

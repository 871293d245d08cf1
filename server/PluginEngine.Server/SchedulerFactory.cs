using PluginEngine.Core.Inference;
using PluginEngine.Core.Serving;

namespace PluginEngine.Server;

/// <summary>The one place that picks the completion scheduler for <c>-np</c> (docs/serve.md#schedulers).</summary>
public static class SchedulerFactory
{
    /// <summary>
    /// <paramref name="slots"/> = 1: <see cref="SequentialCompletionScheduler"/> (one request at a time, the baseline). More
    /// slots: <see cref="BatchedCompletionScheduler"/> (continuous batching: every busy slot advances in one forward pass;
    /// docs/batching.md), each slot with <paramref name="slotContext"/>'s context size.
    /// </summary>
    /// <param name="slotContext">Each slot's context (its size is what one request's prompt + answer may use).</param>
    /// <param name="queueCapacity">Requests that may wait for a slot before new ones get HTTP 503.</param>
    public static ICompletionScheduler Create(LoadedModel model, ContextOptions slotContext, int slots, int queueCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        return slots switch
        {
            1 => new SequentialCompletionScheduler(model, slotContext, queueCapacity),
            _ => BatchedCompletionScheduler.Create(model, slotContext, slots, queueCapacity),
        };
    }
}

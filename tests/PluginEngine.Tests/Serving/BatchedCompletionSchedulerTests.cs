using PluginEngine.Core.Chat;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Sampling;
using PluginEngine.Core.Serving;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Serving;

/// <summary>
/// Continuous batching (docs/batching.md#the-scheduler): concurrent greedy requests get exactly what each gets alone; a
/// cancelled request frees its slot (running or queued); a full queue and a prompt longer than a slot are refused at submit.
/// The model is a small synthetic Q4_0 one: the CPU gives the same logits whatever the batch (BatchedContextTests).
/// </summary>
public sealed class BatchedCompletionSchedulerTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "pluginengine-scheduler-" + Guid.NewGuid().ToString("N"));
    private readonly LoadedModel _model;

    public BatchedCompletionSchedulerTests()
    {
        Directory.CreateDirectory(_folder);
        string path = Path.Combine(_folder, "model.gguf");
        SyntheticModel.Write(new SyntheticModelSpec
        {
            Name = "scheduler", VocabularySize = 320, EmbeddingLength = 64, BlockCount = 2, HeadCount = 4, KvHeadCount = 2,
            FeedForwardLength = 128, ContextLength = 128, WeightType = SyntheticWeightType.Q4_0, Seed = 5,
        }, path);
        var cpu = CpuTestBackend.Device;
        _model = LoadedModel.Load(path, new ModelLoadOptions(cpu, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance);
    }

    private static readonly ContextOptions Options = new(ContextSize: 64, BatchSize: 24);

    private static int[] Prompt(int i) => [1, .. Enumerable.Range(0, 3 + i * 2).Select(k => 10 + (i * 37 + k * 11) % 300)]; // 4 .. 18 tokens

    private CompletionRequest Request(int i, int maxTokens = 20) => new()
    {
        PromptTokens = Prompt(i), MaxTokens = maxTokens, Sampling = SamplerSettings.Greedy, EndTokens = new HashSet<int> { _model.Tokenizer.EosTokenId },
    };

    /// <summary>The reference: one sequence in its own single-slot context, evaluated and sampled greedily token by token.</summary>
    private List<int> Alone(CompletionRequest request)
    {
        using var context = _model.CreateContext(Options);
        var logits = new float[context.VocabularySize];
        var sampler = new Sampler(request.Sampling);
        var history = new List<int>(request.PromptTokens);
        context.Evaluate(history.ToArray(), logits);
        var sampled = new List<int>();
        while (sampled.Count < request.MaxTokens)
        {
            int next = sampler.Sample(logits, history.ToArray());
            sampled.Add(next);
            if (request.EndTokens.Contains(next)) break;
            history.Add(next);
            context.Evaluate([next], logits);
        }
        return sampled;
    }

    [Fact]
    public async Task Each_of_8_concurrent_greedy_requests_gets_exactly_what_it_gets_alone()
    {
        var requests = Enumerable.Range(0, 8).Select(i => Request(i)).ToArray();
        var expectedTokens = requests.Select(Alone).ToArray();

        // The same scheduler, one request at a time (the text, through the same streaming decoder and filter).
        var aloneTexts = new List<string>();
        using (var single = new BatchedCompletionScheduler(_model, Options, slots: 1, queueCapacity: 8))
            foreach (var r in requests) aloneTexts.Add((await single.SubmitAsync(r, cancellation: TestContext.Current.CancellationToken)).Text);

        using var scheduler = new BatchedCompletionScheduler(_model, Options, slots: 8, queueCapacity: 8);
        var streamed = requests.Select(_ => new System.Text.StringBuilder()).ToArray();
        var tasks = requests.Select((r, i) => scheduler.SubmitAsync(r, piece => streamed[i].Append(piece))).ToArray();
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < requests.Length; i++)
        {
            Assert.Equal(expectedTokens[i], results[i].Tokens);
            Assert.Equal(aloneTexts[i], results[i].Text);
            Assert.Equal(results[i].Text, streamed[i].ToString());
            Assert.Equal(requests[i].PromptTokens.Count, results[i].PromptTokens);
        }
        var stats = scheduler.Statistics;
        Assert.Equal(8, stats.RequestsCompleted);
        Assert.Equal(0, stats.BusySlots);
        Assert.Equal(requests.Sum(r => r.PromptTokens.Count), stats.PromptTokens);
        Assert.Equal(results.Sum(r => r.GeneratedTokens), stats.GeneratedTokens);
        // Batched: far fewer forward passes than tokens (prompts chunked into steps of ≤ 24 tokens next to decodes).
        Assert.True(stats.Steps < stats.GeneratedTokens, $"{stats.Steps} steps for {stats.GeneratedTokens} generated tokens");
    }

    [Fact]
    public async Task Cancelling_a_running_request_frees_its_slot_at_the_next_step()
    {
        using var scheduler = new BatchedCompletionScheduler(_model, Options, slots: 1, queueCapacity: 4);
        using var cts = new CancellationTokenSource();
        int pieces = 0;
        var first = scheduler.SubmitAsync(Request(3, maxTokens: 40) with { EndTokens = new HashSet<int>() }, _ => { if (++pieces == 2) cts.Cancel(); }, cts.Token);
        var second = scheduler.SubmitAsync(Request(1), cancellation: TestContext.Current.CancellationToken); // waits for the only slot
        var cancelled = await first;
        Assert.Equal(ChatStopReason.Cancelled, cancelled.StopReason);
        Assert.InRange(cancelled.GeneratedTokens, 2, 3);
        var next = await second;
        Assert.Equal(Alone(Request(1)), next.Tokens); // the freed slot serves the next request, its old cache rows unseen
        Assert.Equal(0, scheduler.Statistics.BusySlots);
    }

    [Fact]
    public async Task A_queued_request_cancelled_completes_at_once_and_a_full_queue_refuses()
    {
        using var scheduler = new BatchedCompletionScheduler(_model, Options, slots: 1, queueCapacity: 2);
        using var gate = new ManualResetEventSlim();
        using var started = new ManualResetEventSlim();
        var blocker = scheduler.SubmitAsync(Request(0, maxTokens: 5) with { EndTokens = new HashSet<int>() }, _ => { started.Set(); gate.Wait(); }, TestContext.Current.CancellationToken);
        Assert.True(started.Wait(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken)); // the worker is inside the first request's step
        using var cts = new CancellationTokenSource();
        var queued = scheduler.SubmitAsync(Request(1), cancellation: cts.Token);
        var other = scheduler.SubmitAsync(Request(2), cancellation: TestContext.Current.CancellationToken);
        Assert.Equal(2, scheduler.Statistics.Queued);
        Assert.Throws<SchedulerQueueFullException>(() => SubmitNow(scheduler, Request(3)));
        cts.Cancel();
        var result = await queued;                                                  // while the worker is still blocked
        Assert.Equal(ChatStopReason.Cancelled, result.StopReason);
        Assert.Equal(0, result.GeneratedTokens);
        Assert.Equal(1, scheduler.Statistics.Queued);
        gate.Set();
        Assert.Equal(ChatStopReason.Length, (await blocker).StopReason);
        var otherTokens = (await other).Tokens; // first: the reference below uses the same device queue, which one thread at a time may drive
        Assert.Equal(Alone(Request(2)), otherTokens);
    }

    /// <summary>Submits and drops the task: for the refusals, which are thrown synchronously, before any task exists.</summary>
    private static void SubmitNow(ICompletionScheduler scheduler, CompletionRequest request) => _ = scheduler.SubmitAsync(request);

    [Fact]
    public void A_prompt_longer_than_a_slot_and_bad_requests_are_refused_at_submit()
    {
        using var scheduler = new BatchedCompletionScheduler(_model, Options, slots: 2, queueCapacity: 2);
        Assert.Equal(64, scheduler.SlotContextSize);
        Assert.Throws<ContextOverflowException>(() => SubmitNow(scheduler, new CompletionRequest { PromptTokens = new int[65] }));
        Assert.Throws<ArgumentException>(() => SubmitNow(scheduler, new CompletionRequest { PromptTokens = [] }));
        Assert.Throws<ArgumentException>(() => SubmitNow(scheduler, new CompletionRequest { PromptTokens = [1, 320] }));
        Assert.Throws<ArgumentOutOfRangeException>(() => SubmitNow(scheduler, new CompletionRequest { PromptTokens = [1], MaxTokens = -1 }));
        Assert.Equal(0, scheduler.Statistics.Queued);
    }

    [Fact]
    public async Task A_full_slot_context_ends_with_context_full_and_drain_refuses_new_requests()
    {
        using var scheduler = BatchedCompletionScheduler.Create(_model, Options, slots: 2, queueCapacity: 2);
        var full = scheduler.SubmitAsync(new CompletionRequest { PromptTokens = Prompt(0), MaxTokens = 1000, Sampling = SamplerSettings.Greedy }, cancellation: TestContext.Current.CancellationToken);
        var shortOne = scheduler.SubmitAsync(Request(1, maxTokens: 3) with { EndTokens = new HashSet<int>() }, cancellation: TestContext.Current.CancellationToken);
        await scheduler.DrainAsync(CancellationToken.None);                          // lets both finish
        Assert.Equal(ChatStopReason.ContextFull, (await full).StopReason);
        Assert.Equal(64 - Prompt(0).Length + 1, (await full).GeneratedTokens);      // the last sampled token is not evaluated
        Assert.Equal(ChatStopReason.Length, (await shortOne).StopReason);
        Assert.Throws<ObjectDisposedException>(() => SubmitNow(scheduler, Request(2)));
    }

    [Fact]
    public async Task Drain_with_a_fired_token_cancels_running_requests()
    {
        using var scheduler = new BatchedCompletionScheduler(_model, Options, slots: 1, queueCapacity: 2);
        using var started = new ManualResetEventSlim();
        using var drainRequested = new ManualResetEventSlim();
        // The worker waits in its first text callback until the drain is requested: otherwise, on a busy machine, the request
        // could fill its slot's 64 positions (ContextFull) before the test thread gets to cancel it.
        var running = scheduler.SubmitAsync(Request(0, maxTokens: 1000) with { EndTokens = new HashSet<int>() },
            _ => { started.Set(); drainRequested.Wait(TimeSpan.FromSeconds(30)); }, TestContext.Current.CancellationToken);
        var queued = scheduler.SubmitAsync(Request(1), cancellation: TestContext.Current.CancellationToken);
        Assert.True(started.Wait(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken));
        var drain = scheduler.DrainAsync(new CancellationToken(canceled: true));
        drainRequested.Set();
        await drain;
        Assert.Equal(ChatStopReason.Cancelled, (await running).StopReason);
        Assert.Equal(ChatStopReason.Cancelled, (await queued).StopReason);
    }

    public void Dispose()
    {
        _model.Dispose();
        try { if (Directory.Exists(_folder)) Directory.Delete(_folder, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

using System.Diagnostics;
using PluginEngine.Abstractions;
using PluginEngine.Core.Conformance;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Sampling;

namespace PluginEngine.Core.Serving;

/// <summary>
/// The batching check of <c>pluginengine conformance</c> (docs/batching.md#checks): on a generated Q4_0 model loaded on one
/// backend, <see cref="Requests"/> greedy requests submitted together to a <see cref="BatchedCompletionScheduler"/> of as
/// many slots must each get exactly the tokens and text it gets when sent alone (a one-slot scheduler, one request at a
/// time). The prompts have different lengths and the step budget is smaller than their sum, so prompt chunks share steps
/// with other sequences' decode tokens. A divergence passes only at a near-tie (see <see cref="Run"/>), unless the check is
/// exact: the CPU backend computes every token with the same float operations whatever its batch
/// (docs/batching.md#batch-invariance-on-the-cpu), so there it must give every token equal.
/// </summary>
public static class BatchedGreedyCheck
{
    /// <summary>Concurrent requests.</summary>
    public const int Requests = 8;

    private const int MaxTokens = 24;
    private static readonly ContextOptions Options = new(ContextSize: 64, BatchSize: 32);

    /// <summary>
    /// Runs the check on <paramref name="device"/> (with <paramref name="cpu"/> for op fallback, may be null). Where the two runs
    /// of a request first pick different tokens, the check fails unless those two tokens' logits for the request alone are a
    /// near-tie (within <see cref="TieTolerance"/> × the logits' rms): a batch may select other kernels, equal only up to rounding. With
    /// <paramref name="exact"/> there is no such allowance: every token must be equal (the CPU backend's guarantee).
    /// </summary>
    public static ModelCheckResult Run(IBackendDevice device, IBackendDevice? cpu, string modelFolder, bool exact = false)
    {
        string name = $"batching: {Requests} concurrent greedy requests equal each alone ({device.Description.Backend})";
        try
        {
            using var model = LoadedModel.Load(Model(modelFolder), new ModelLoadOptions(device, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance);
            var requests = Enumerable.Range(0, Requests).Select(i => new CompletionRequest
            {
                PromptTokens = [1, .. Enumerable.Range(0, 3 + 2 * i).Select(k => 10 + (i * 37 + k * 11) % 480)],
                MaxTokens = MaxTokens, Sampling = SamplerSettings.Greedy, EndTokens = new HashSet<int> { model.Tokenizer.EosTokenId },
            }).ToArray();

            // One scheduler at a time: both drive the model's device queues, which one thread at a time may use.
            var alone = new List<CompletionResult>();
            long aloneSteps;
            using (var single = new BatchedCompletionScheduler(model, Options, slots: 1, queueCapacity: Requests))
            {
                foreach (var r in requests) alone.Add(single.SubmitAsync(r).GetAwaiter().GetResult());
                aloneSteps = single.Statistics.Steps;
            }
            var clock = Stopwatch.StartNew();
            CompletionResult[] together;
            long steps;
            using (var batched = new BatchedCompletionScheduler(model, Options, slots: Requests, queueCapacity: Requests))
            {
                together = Task.WhenAll(requests.Select(r => batched.SubmitAsync(r))).GetAwaiter().GetResult();
                steps = batched.Statistics.Steps;
            }
            var nearTies = new List<string>();
            for (int i = 0; i < Requests; i++)
            {
                var (a, b) = (alone[i].Tokens, together[i].Tokens);
                int at = 0;
                while (at < a.Count && at < b.Count && a[at] == b[at]) at++;
                if (at < a.Count || at < b.Count)
                {
                    string where = $"request {i} ({requests[i].PromptTokens.Count}-token prompt): token {at} is {Show(b, at)} batched, {Show(a, at)} alone";
                    // A divergence is a failure unless the two tokens were a near-tie for the request alone: then batching
                    // changed only rounding (the batch selects other kernels), which the logits checks allow too.
                    if (at >= a.Count || at >= b.Count) return new(name, false, where);
                    if (exact) return new(name, false, $"{where}; exact: no near-tie allowance");
                    double gap = TieGap(model, requests[i].PromptTokens, a, at, b[at], out double rms);
                    if (gap > TieTolerance * rms)
                        return new(name, false, $"{where}; their logits alone differ by {gap:G3} (> {TieTolerance} x the logits' rms {rms:G3}): not a near-tie");
                    nearTies.Add($"request {i} token {at}: {Show(b, at)} batched, {Show(a, at)} alone, logits {gap:G3} apart (rms {rms:G3})");
                    continue;
                }
                if (alone[i].Text != together[i].Text)
                    return new(name, false, $"request {i}: the same tokens gave different text");
            }
            int generated = together.Sum(r => r.GeneratedTokens);
            string ties = nearTies.Count == 0 ? exact ? "every token equal (exact)" : "every token equal" : $"equal up to near-ties ({string.Join("; ", nearTies)})";
            return new(name, true, $"{ties}; {generated} tokens in {steps} batched steps ({aloneSteps} alone), {clock.Elapsed.TotalMilliseconds:F0} ms batched");
        }
        catch (Exception e)
        {
            return new(name, false, $"{e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>
    /// How close two tokens' logits must be (relative to the logits' rms) to count as a near-tie: the per-logit limit of the
    /// logits checks (<see cref="ModelChecks.MaxTolerance"/>). A tie is decided by two particular logits, and the logits checks
    /// accept each logit of a backend within that much of the CPU's, so a gap that small may close by rounding alone. (It was
    /// the rms limit, 0.05, until a tie of the check's own model at 0.050 × rms flipped with the kernels a batch selects:
    /// docs/batching.md#checks.) Real batching faults (a wrong cache slot, attention across sequences) diverge by whole units.
    /// </summary>
    private const double TieTolerance = ModelChecks.MaxTolerance;

    /// <summary>|logit(a[at]) − logit(other)| for the request alone after its prompt and a[0..at), and the logits' rms.</summary>
    private static double TieGap(LoadedModel model, IReadOnlyList<int> prompt, IReadOnlyList<int> a, int at, int other, out double rms)
    {
        using var context = model.CreateContext(Options);
        int[] prefix = [.. prompt, .. a.Take(at)];
        var logits = new float[context.VocabularySize];
        context.Evaluate(prefix, logits);
        double sum = 0;
        foreach (float l in logits) sum += (double)l * l;
        rms = Math.Sqrt(sum / logits.Length);
        return Math.Abs(logits[a[at]] - logits[other]);
    }

    private static string Show(IReadOnlyList<int> tokens, int at) => at < tokens.Count ? tokens[at].ToString(System.Globalization.CultureInfo.InvariantCulture) : "(end)";

    /// <summary>A small generated Q4_0 model (d = 768, ff = 1280: not multiples of 512), written once into <paramref name="folder"/>.</summary>
    private static string Model(string folder)
    {
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, "batching-q4_0.gguf");
        if (!File.Exists(path))
            SyntheticModel.Write(new SyntheticModelSpec
            {
                Name = "batching-check", VocabularySize = 512, EmbeddingLength = 768, BlockCount = 2, HeadCount = 12, KvHeadCount = 4,
                FeedForwardLength = 1280, ContextLength = 256, WeightType = SyntheticWeightType.Q4_0, Seed = 13,
            }, path);
        return path;
    }
}

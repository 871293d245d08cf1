using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;

namespace PluginEngine.Core.Conformance;

/// <summary>One model-level check: its name, whether it passed (null: skipped) and what was measured or why it was skipped.</summary>
public sealed record ModelCheckResult(string Name, bool? Passed, string Detail);

/// <summary>
/// Whole-model correctness of a backend against the CPU backend, on generated models (random weights, row lengths that are
/// not multiples of 512 so slides matter), run the same way on any machine and for any backend (what scripts/device once
/// checked by hand): for each weight type, the prompt's logits at every position and one decode step with every layer on the
/// backend and with only the first layer there (<c>-ngl 1</c>: partial offload); and the seed regression — the model read
/// in place from a read-only file mapping with host import forced on, from a file whose padding gaps are zero (clean) and
/// from one whose gaps are not (dirty, so no slide may be read from the file) — bit for bit equal to owned copies, and
/// close to the CPU. Used by <c>pluginengine conformance</c>; the conformance kit's model cases check the same properties.
/// </summary>
public sealed class ModelChecks(IBackendDevice device, IBackendDevice cpu, string modelFolder)
{
    /// <summary>Logits tolerances against the CPU, relative to the CPU logits' RMS (as the conformance kit's seed cases: the
    /// CPU rounds activations to 8 bits before quantized matmuls; a wrong op gives errors of order 1).</summary>
    public const double MaxTolerance = 1.5e-1, RmsTolerance = 5e-2;

    private static readonly int[] Prompt = [1, 17, 300, 42, 5, 99, 256, 3, 411, 12];
    private const int NextToken = 77;

    /// <summary>
    /// Every device of the backend under test, in order: with two or more, each weight type also runs split 1:1 over the first
    /// two (<c>--split-mode layer --tensor-split 1,1</c>) against the same backend on one device (docs/multi-gpu.md). Empty or
    /// one device: that check is skipped, saying how to get two (virtual_devices).
    /// </summary>
    public IReadOnlyList<IBackendDevice> SplitDevices { get; init; } = [];

    /// <summary>Weight types checked by default.</summary>
    public static readonly IReadOnlyList<SyntheticWeightType> DefaultTypes =
        [SyntheticWeightType.F32, SyntheticWeightType.F16, SyntheticWeightType.Q8_0, SyntheticWeightType.Q4_0, SyntheticWeightType.Q4_K_M];

    /// <summary>Runs every check for <paramref name="types"/>, reporting each result as it is known.</summary>
    public List<ModelCheckResult> Run(IReadOnlyList<SyntheticWeightType> types, Action<ModelCheckResult>? report = null)
    {
        var results = new List<ModelCheckResult>();
        void Add(ModelCheckResult r) { results.Add(r); report?.Invoke(r); }
        foreach (var type in types)
        {
            string path = Model(type, padding: 0);
            float[][] reference = Evaluate(cpu, path, -1, LoadOptions.Default, out _);
            foreach (int layers in new[] { -1, 1 })
                Add(Compare($"logits {type} {(layers < 0 ? "all layers" : "-ngl 1")}", reference, () => Evaluate(device, path, layers, LoadOptions.Default, out _), device));
            Add(Split(type, path));
        }
        var seedType = types.Contains(SyntheticWeightType.Q4_0) ? SyntheticWeightType.Q4_0 : types[0];
        foreach (var (gaps, padding) in new[] { ("clean", (byte)0), ("dirty", (byte)0xA5) })
            Add(SeedRegression(seedType, gaps, padding));
        return results;
    }

    /// <summary>
    /// The model split 1:1 over the first two devices against the same backend on the first alone, within the CPU tolerances
    /// (the same kernels on the same values give equal logits; the detail says whether they were bit for bit), with the
    /// activation copies per device pair. Loading, running and disposing both models also exercises the teardown order.
    /// </summary>
    private ModelCheckResult Split(SyntheticWeightType type, string path)
    {
        string name = $"logits {type} split 1:1 over two devices";
        if (SplitDevices.Count < 2)
            return new(name, null, $"{device.Description.Backend} has {SplitDevices.Count} device(s); a split needs two (two GPUs, or the plugin option virtual_devices: 2)");
        var pair = SplitDevices.Take(2).ToArray();
        try
        {
            float[][] single = Evaluate(pair[0], path, -1, LoadOptions.Default, out _);
            string transfers = "";
            bool identical = false;
            var compared = Compare(name, single, () =>
            {
                var split = Evaluate(pair[0], path, -1, LoadOptions.Default, out _, pair, new LayerSplitRequest { Proportions = [1, 1] }, out transfers);
                identical = split.Zip(single).All(s => s.First.AsSpan().SequenceEqual(s.Second));
                return split;
            }, device);
            return compared with { Detail = $"{compared.Detail.Replace("the cpu logits' rms", "the one-device logits' rms", StringComparison.Ordinal)}; " +
                                            $"{(identical ? "bit for bit equal" : "not bit for bit")}; transfers: {transfers}" };
        }
        catch (Exception e) { return new(name, false, $"{e.GetType().Name}: {e.Message}"); }
    }

    private ModelCheckResult SeedRegression(SyntheticWeightType type, string gaps, byte padding)
    {
        string name = $"seed regression {type}, {gaps} gaps, read-only mapping + forced import";
        string path = Model(type, padding);
        try
        {
            var forced = new LoadOptions(ModelMemoryMode.FileMapping, new HostImportSetting(HostImportMode.On, "conformance"));
            var owned = new LoadOptions(ModelMemoryMode.FileMapping, new HostImportSetting(HostImportMode.Off, "conformance"));
            float[][] imported = Evaluate(device, path, -1, forced, out string plan);
            float[][] copies = Evaluate(device, path, -1, owned, out _);
            for (int step = 0; step < imported.Length; step++)
                if (!imported[step].AsSpan().SequenceEqual(copies[step]))
                    return new(name, false, $"step {step}: logits from the imported model differ from owned copies ({plan})");
            float[][] reference = Evaluate(cpu, path, -1, LoadOptions.Default, out _);
            var compared = Compare(name, reference, () => imported, device);
            return compared with { Detail = $"{compared.Detail}; equal to owned copies; {plan}" };
        }
        catch (Exception e)
        {
            return new(name, false, $"{e.GetType().Name}: {e.Message}");
        }
    }

    private static ModelCheckResult Compare(string name, float[][] reference, Func<float[][]> run, IBackendDevice device)
    {
        float[][] actual;
        try { actual = run(); }
        catch (Exception e) { return new(name, false, $"{e.GetType().Name}: {e.Message}"); }
        double worstMax = 0, worstRms = 0;
        for (int step = 0; step < reference.Length; step++)
        {
            var (max, rms, bad) = RelativeErrors(reference[step], actual[step]);
            if (bad >= 0) return new(name, false, $"step {step}: logit {bad} is {actual[step][bad]} (cpu {reference[step][bad]})");
            worstMax = Math.Max(worstMax, max);
            worstRms = Math.Max(worstRms, rms);
        }
        bool ok = worstMax <= MaxTolerance && worstRms <= RmsTolerance;
        return new(name, ok, $"max |diff| {worstMax:G3} and rms diff {worstRms:G3} of the cpu logits' rms (limits {MaxTolerance:G3}, {RmsTolerance:G3})");
    }

    /// <summary>max |a − b| and rms(a − b), both over rms(a); the index of the first non-finite value of b, or −1.</summary>
    public static (double Max, double Rms, int NonFinite) RelativeErrors(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        if (expected.Length != actual.Length) throw new ArgumentException($"{expected.Length} vs {actual.Length} values");
        double sumSq = 0, errSq = 0, worst = 0;
        foreach (float e in expected) sumSq += (double)e * e;
        double rms = Math.Max(Math.Sqrt(sumSq / Math.Max(1, expected.Length)), 1e-3);
        for (int i = 0; i < expected.Length; i++)
        {
            if (!float.IsFinite(actual[i])) return (double.NaN, double.NaN, i);
            double err = Math.Abs((double)expected[i] - actual[i]);
            errSq += err * err;
            worst = Math.Max(worst, err);
        }
        return (worst / rms, Math.Sqrt(errSq / Math.Max(1, expected.Length)) / rms, -1);
    }

    /// <summary>Every position of the prompt (one batch) and one decode step, with <paramref name="gpuLayers"/> on <paramref name="primary"/>.</summary>
    private float[][] Evaluate(IBackendDevice primary, string path, int gpuLayers, LoadOptions load, out string plan)
        => Evaluate(primary, path, gpuLayers, load, out plan, null, null, out _);

    /// <summary>As above, over <paramref name="devices"/> with <paramref name="split"/> when given; <paramref name="transfers"/>: the copies per device pair.</summary>
    private float[][] Evaluate(IBackendDevice primary, string path, int gpuLayers, LoadOptions load, out string plan,
        IReadOnlyList<IBackendDevice>? devices, LayerSplitRequest? split, out string transfers)
    {
        var options = new ModelLoadOptions(primary, cpu, gpuLayers, load) { Devices = devices, Split = split ?? new LayerSplitRequest() };
        using var model = LoadedModel.Load(path, options, SystemMappingFactory.Instance);
        using var context = model.CreateContext(new ContextOptions(ContextSize: 64, BatchSize: 16));
        int vocab = context.VocabularySize;
        var prompt = new float[Prompt.Length * vocab];
        var next = new float[vocab];
        context.Evaluate(Prompt, prompt, allPositions: true);
        context.Evaluate([NextToken], next);
        var kinds = model.Loaded.Tensors.Values.Where(b => b.Device == primary).GroupBy(b => b.Placement.Kind).Select(g => $"{g.Count()} {g.Key.ToString().ToLowerInvariant()}");
        plan = $"tensors on {primary.Description.Backend}: {string.Join(", ", kinds.DefaultIfEmpty("none"))}";
        transfers = context.Transfers.Copies == 0 ? "none" : $"{context.Transfers} ({context.Transfers.DescribePairs()})";
        return [prompt, next];
    }

    /// <summary>The generated model for <paramref name="type"/> (d = 768, ff = 1280: not multiples of 512), written once.</summary>
    private string Model(SyntheticWeightType type, byte padding)
    {
        Directory.CreateDirectory(modelFolder);
        string path = Path.Combine(modelFolder, $"conformance-{type}-pad{padding:X2}.gguf".ToLowerInvariant());
        if (!File.Exists(path))
            SyntheticModel.Write(new SyntheticModelSpec
            {
                Name = $"conformance-{type}", VocabularySize = 512, EmbeddingLength = 768, BlockCount = 2, HeadCount = 12, KvHeadCount = 4,
                FeedForwardLength = 1280, ContextLength = 256, WeightType = type, Seed = 7, PaddingByte = padding,
            }, path);
        return path;
    }
}

using System.Globalization;
using System.Text;
using PluginEngine.Abstractions;
using PluginEngine.Core.Models;

namespace PluginEngine.Core.Loading;

/// <summary>How the offloaded layers use the devices of the selected backends (docs/multi-gpu.md#flags).</summary>
public enum SplitMode
{
    /// <summary>One device (the main one) runs every offloaded layer.</summary>
    None,
    /// <summary>The offloaded layers are cut into contiguous ranges, one per device (llama.cpp's <c>-sm layer</c>, the default).</summary>
    Layer,
}

/// <summary>
/// What the user asked of the split (<c>--split-mode</c>, <c>--tensor-split</c>, <c>--main-gpu</c>) and the context the
/// memory estimate is made for (docs/multi-gpu.md#how-a-split-is-planned).
/// </summary>
public sealed record LayerSplitRequest
{
    /// <summary>None: the main device only; Layer (default): contiguous layer ranges over every device.</summary>
    public SplitMode Mode { get; init; } = SplitMode.Layer;

    /// <summary>Share of the offloaded layers per device, in device order; missing entries are 0. Null: by free memory.</summary>
    public IReadOnlyList<double>? Proportions { get; init; }

    /// <summary>Index of the main device (the output layer and token embeddings; the device of split mode none). Null: the default (see docs).</summary>
    public int? MainDevice { get; init; }

    /// <summary>Context positions the KV cache estimate is made for; 0: min(the model's context length, 4096), the run command's default.</summary>
    public int ContextSize { get; init; }

    /// <summary>Tokens per forward pass the activation estimate is made for.</summary>
    public int BatchSize { get; init; } = 512;

    /// <summary>KV cache element type of the estimate.</summary>
    public GgmlType KvCacheType { get; init; } = GgmlType.F16;

    /// <summary>The request's values, checked alone (before devices are known): a negative, non-finite or all-zero proportion, a negative main index.</summary>
    public void Validate()
    {
        if (Proportions is { } p)
        {
            if (p.Count == 0) throw new SplitConfigException("--tensor-split: no proportions given");
            for (int i = 0; i < p.Count; i++)
                if (!double.IsFinite(p[i]) || p[i] < 0)
                    throw new SplitConfigException($"--tensor-split {Format(p)}: proportion {i + 1} ({p[i].ToString(CultureInfo.InvariantCulture)}) must be a finite number ≥ 0");
            if (p.All(x => x == 0)) throw new SplitConfigException($"--tensor-split {Format(p)}: at least one proportion must be above 0");
        }
        if (MainDevice is < 0) throw new SplitConfigException($"--main-gpu {MainDevice}: must be 0 or more");
    }

    internal static string Format(IReadOnlyList<double> p) => string.Join(",", p.Select(x => x.ToString(CultureInfo.InvariantCulture)));
}

/// <summary>The split flags do not fit the devices found (more proportions than devices, a main device out of range); the message names the flag and value.</summary>
public sealed class SplitConfigException(string message) : Exception(message);

/// <summary>The model with its KV cache and activations fits on no combination of the devices and the CPU; the message names the sizes.</summary>
public sealed class ModelDoesNotFitException(string message) : Exception(message);

/// <summary>One device's share of a split.</summary>
/// <param name="Device">The device.</param>
/// <param name="FirstLayer">First layer it runs (meaningless when <paramref name="LayerCount"/> is 0).</param>
/// <param name="LayerCount">Contiguous layers it runs.</param>
/// <param name="WeightBytes">Bytes of weights on it (its layers, and the output and embeddings if it is the output device).</param>
/// <param name="KvBytes">Bytes of KV cache for its layers at the request's context size.</param>
/// <param name="ActivationBytes">Bytes of activations (and logits on the output device) at the request's batch size.</param>
/// <param name="FreeBytes">Free memory the device reported when the split was planned.</param>
public sealed record DeviceShare(IBackendDevice Device, int FirstLayer, int LayerCount, long WeightBytes, long KvBytes, long ActivationBytes, long FreeBytes)
{
    /// <summary>Everything the split puts on the device.</summary>
    public long TotalBytes => WeightBytes + KvBytes + ActivationBytes;

    /// <summary>"layers 0-15", "no layers".</summary>
    public string Layers => LayerCount == 0 ? "no layers" : LayerCount == 1 ? $"layer {FirstLayer}" : $"layers {FirstLayer}-{FirstLayer + LayerCount - 1}";
}

/// <summary>
/// The result of <see cref="LayerSplitPlanner.Plan"/>: which device runs each layer, where the output layer lives, each
/// device's bytes, and the activation copies a token costs (docs/multi-gpu.md#how-a-split-is-planned).
/// </summary>
public sealed class LayerSplit
{
    internal LayerSplit(IBackendDevice[] layerDevices, IBackendDevice output, IReadOnlyList<DeviceShare> shares, int offloaded, int embeddingLength, IReadOnlyList<string> notes)
    {
        LayerDevices = layerDevices;
        OutputDevice = output;
        Shares = shares;
        OffloadedLayers = offloaded;
        EmbeddingLength = embeddingLength;
        Notes = notes;
    }

    /// <summary>Device of each layer.</summary>
    public IReadOnlyList<IBackendDevice> LayerDevices { get; }

    /// <summary>Device of the output norm and projection, and of the token embeddings.</summary>
    public IBackendDevice OutputDevice { get; }

    /// <summary>Per device in use (split devices in order, then the CPU when it runs layers or the output).</summary>
    public IReadOnlyList<DeviceShare> Shares { get; }

    /// <summary>Layers on the split devices (the effective <c>-ngl</c>); the rest run on the CPU.</summary>
    public int OffloadedLayers { get; }

    private int EmbeddingLength { get; }

    /// <summary>What the planner decided on its own (layers moved to the CPU to fit, a device given no layers), for the log.</summary>
    public IReadOnlyList<string> Notes { get; }

    /// <summary>
    /// Device changes along one token's path (embeddings on the output device → layer 0 … layer n-1 → output): each is one
    /// copy of d floats per token (per row of a batch).
    /// </summary>
    public int BoundariesPerToken
    {
        get
        {
            int changes = 0;
            var previous = OutputDevice; // the embeddings live with the output
            foreach (var d in LayerDevices.Append(OutputDevice))
            {
                if (d != previous) changes++;
                previous = d;
            }
            return changes;
        }
    }

    /// <summary>Bytes of activations copied between devices per token: boundaries × d × 4.</summary>
    public long TransferBytesPerToken => (long)BoundariesPerToken * EmbeddingLength * sizeof(float);

    /// <summary>
    /// One line per device (layers, weights, KV cache, activations), then the transfers per token and the notes. Free memory
    /// is left out (it changes from run to run, and plans are compared); a note names it where a device is short.
    /// </summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        foreach (var s in Shares)
            sb.AppendLine($"device {LayerSplitPlanner.Label(s.Device)}: {s.Layers}{(s.Device == OutputDevice ? " + output + embeddings" : "")}; " +
                          $"weights {Bytes(s.WeightBytes)}, KV cache {Bytes(s.KvBytes)}, activations {Bytes(s.ActivationBytes)}");
        sb.AppendLine($"activation transfers per token: {BoundariesPerToken} device boundaries × {EmbeddingLength} floats = {TransferBytesPerToken:N0} B");
        foreach (var n in Notes) sb.AppendLine($"split: {n}");
        return sb.ToString();
    }

    internal static string Bytes(long b) => b >= 1L << 30 ? $"{b / (double)(1L << 30):F2} GiB" : b >= 1L << 20 ? $"{b / (double)(1L << 20):F1} MiB" : $"{b:N0} B";
}

/// <summary>
/// Cuts a model's layers over devices (docs/multi-gpu.md#how-a-split-is-planned): contiguous ranges in device order, sized
/// by <c>--tensor-split</c> proportions or, by default, by each device's free memory; the first <c>-ngl</c> layers go to the
/// devices and the rest to the CPU. Without <c>-ngl</c> the planner offloads as many layers as fit (weights + KV cache +
/// activations within each device's free memory) and puts the rest on the CPU; when even that does not fit, it refuses
/// with the sizes. Pure: it reads only the file's tensor sizes and the devices' memory reports, so tests drive it with fake devices.
/// </summary>
public static class LayerSplitPlanner
{
    /// <summary>"cuda:0000:01:00.0 (NVIDIA H100)": <see cref="Id"/> and name.</summary>
    public static string Label(IBackendDevice d) => $"{Id(d)} ({d.Description.Name})";

    /// <summary>"backend:stable id" (the stable id alone where it already starts with the backend's name): distinct for two devices of one backend.</summary>
    public static string Id(IBackendDevice d)
        => d.Description.StableId.StartsWith(d.Description.Backend + ":", StringComparison.Ordinal) ? d.Description.StableId : $"{d.Description.Backend}:{d.Description.StableId}";

    /// <summary>Plans the split.</summary>
    /// <param name="file">The model's tensors (sizes per layer).</param>
    /// <param name="hp">Its hyper-parameters (layer count, widths for KV cache and activations).</param>
    /// <param name="devices">Placement targets in order (distinct). When the only one is <paramref name="cpu"/>, everything runs there.</param>
    /// <param name="cpu">The CPU device for the layers not offloaded; null when no CPU backend is loaded.</param>
    /// <param name="gpuLayers">Layers on the devices counted from the first; negative: as many as fit (all when they do).</param>
    /// <param name="request">Mode, proportions, main device and the context of the estimate.</param>
    /// <param name="memory">Free and total memory of a device; default: <see cref="IBufferProvider.QueryMemory"/>.</param>
    public static LayerSplit Plan(ModelFileLayout file, LlamaHyperParameters hp, IReadOnlyList<IBackendDevice> devices, IBackendDevice? cpu,
        int gpuLayers, LayerSplitRequest request, Func<IBackendDevice, (long Free, long Total)>? memory = null)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (devices.Count == 0) throw new ArgumentException("no devices to place layers on", nameof(devices));
        if (devices.Distinct().Count() != devices.Count) throw new ArgumentException("a device is listed twice", nameof(devices));
        request.Validate();
        memory ??= d => d.Buffers.QueryMemory();
        string names = string.Join(", ", devices.Select((d, i) => $"{i}: {Label(d)}"));
        if (request.MainDevice is int main && main >= devices.Count)
            throw new SplitConfigException($"--main-gpu {main}: out of range; {devices.Count} device(s): {names}");
        if (request.Proportions is { } given && given.Count > devices.Count)
            throw new SplitConfigException($"--tensor-split {LayerSplitRequest.Format(given)}: {given.Count} proportions for {devices.Count} device(s): {names}");

        var targets = request.Mode == SplitMode.None ? [devices[request.MainDevice ?? 0]] : devices.ToArray();
        bool cpuOnly = targets.Length == 1 && targets[0] == cpu;
        int blocks = hp.BlockCount;
        var cost = new Costs(file, hp, request);
        var free = targets.Append(cpu).OfType<IBackendDevice>().Distinct().ToDictionary(d => d, d => Math.Max(0, memory(d).Free));
        var notes = new List<string>();

        double[] proportions;
        if (request.Mode == SplitMode.None || targets.Length == 1) proportions = [1];
        else if (request.Proportions is { } p) proportions = Enumerable.Range(0, targets.Length).Select(i => i < p.Count ? p[i] : 0).ToArray();
        else
        {
            proportions = targets.Select(d => (double)free[d]).ToArray();
            if (proportions.All(x => x == 0)) proportions = targets.Select(_ => 1.0).ToArray(); // nothing reported: even
        }

        bool explicitLayers = gpuLayers >= 0;
        int offloaded = cpuOnly || !explicitLayers || gpuLayers > blocks ? blocks : gpuLayers;
        if (cpu is null && offloaded < blocks)
            throw new Inference.MissingOpsException($"-ngl {gpuLayers}: the layers not on '{targets[0].Description.Backend}' run on the cpu backend, which is not loaded");

        while (true)
        {
            var (layers, output) = Assign(targets, proportions, offloaded, blocks, cpu, request.MainDevice is int named && request.Mode == SplitMode.Layer ? devices[named] : null);
            var shares = Shares(layers, output, targets, cpu, cost, free);
            var over = shares.Where(s => s.TotalBytes > s.FreeBytes).ToList();
            if (over.Count == 0 || explicitLayers)
            {
                // An explicit -ngl is obeyed: free memory reports are estimates (some backends report their total), so a
                // tight fit is a warning, and only an allocation that really fails stops the load.
                foreach (var s in over)
                    notes.Add($"{Label(s.Device)} needs {LayerSplit.Bytes(s.TotalBytes)} and reports {LayerSplit.Bytes(s.FreeBytes)} free: the load may fail (lower -ngl or change --tensor-split)");
                if (!explicitLayers && offloaded < blocks)
                    notes.Add($"the model does not fit the device(s) whole: {offloaded} of {blocks} layers offloaded (as with -ngl {offloaded}), the rest on {Label(cpu!)}");
                foreach (var d in targets.Where(d => !layers.Contains(d) && d != output))
                    notes.Add($"{Label(d)} gets no layers ({(request.Proportions is null ? "the split by free memory" : "--tensor-split")} leaves it none)");
                return new LayerSplit(layers, output, shares, offloaded, hp.EmbeddingLength, notes);
            }
            // Too big for the devices: offload one layer fewer, unless the CPU is already full (then fewer makes it worse).
            if (cpuOnly || offloaded == 0 || cpu is null || over.Any(s => s.Device == cpu))
                throw TooLarge(cost, free, blocks, request);
            offloaded--;
        }
    }

    /// <summary>
    /// Layer l goes to the first device whose cumulative share reaches past l: device i's range ends at
    /// round(offloaded × (p0 + … + pi) / Σp) (halves away from zero), so 7 layers at 1:1 are 4 + 3 and at 3:1 are 5 + 2.
    /// </summary>
    internal static (IBackendDevice[] Layers, IBackendDevice Output) Assign(IReadOnlyList<IBackendDevice> targets, double[] proportions, int offloaded, int blocks,
        IBackendDevice? cpu, IBackendDevice? main)
    {
        var layers = new IBackendDevice[blocks];
        double total = proportions.Sum(), cumulative = 0;
        int start = 0;
        for (int i = 0; i < targets.Count; i++)
        {
            cumulative += proportions[i];
            int end = i == targets.Count - 1 ? offloaded : (int)Math.Min(offloaded, Math.Round(offloaded * cumulative / total, MidpointRounding.AwayFromZero));
            for (int l = start; l < end; l++) layers[l] = targets[i];
            start = Math.Max(start, end);
        }
        for (int l = offloaded; l < blocks; l++) layers[l] = cpu!;
        // The output goes to the main device when one is named, else (as before splits existed) to the last layer's device.
        var output = main ?? (blocks > 0 ? layers[^1] : targets[0]);
        return (layers, output);
    }

    private static List<DeviceShare> Shares(IBackendDevice[] layers, IBackendDevice output, IBackendDevice[] targets, IBackendDevice? cpu, Costs cost,
        Dictionary<IBackendDevice, long> free)
    {
        var shares = new List<DeviceShare>();
        foreach (var d in targets.Append(cpu).OfType<IBackendDevice>().Distinct())
        {
            int first = Array.IndexOf(layers, d), count = layers.Count(x => x == d);
            if (count == 0 && d != output && !targets.Contains(d)) continue; // the CPU only holds fallbacks
            long weights = Enumerable.Range(0, layers.Length).Where(l => layers[l] == d).Sum(l => cost.LayerWeights[l]);
            long activations = count > 0 || d == output ? cost.Activations : 0;
            if (d == output) { weights += cost.OutputWeights; activations += cost.Logits; }
            shares.Add(new DeviceShare(d, Math.Max(0, first), count, weights, cost.KvPerLayer * count, activations, free[d]));
        }
        return shares;
    }

    private static ModelDoesNotFitException TooLarge(Costs cost, Dictionary<IBackendDevice, long> free, int blocks, LayerSplitRequest request)
    {
        long weights = cost.LayerWeights.Sum() + cost.OutputWeights, kv = cost.KvPerLayer * blocks, act = cost.Activations + cost.Logits;
        return new ModelDoesNotFitException(
            $"the model does not fit: weights {LayerSplit.Bytes(weights)} + KV cache {LayerSplit.Bytes(kv)} ({cost.ContextSize} positions, {request.KvCacheType}) + " +
            $"activations {LayerSplit.Bytes(act)} (batch {cost.BatchSize}) = {LayerSplit.Bytes(weights + kv + act)}; free memory: " +
            string.Join(", ", free.Select(kv2 => $"{Label(kv2.Key)} {LayerSplit.Bytes(kv2.Value)}")) +
            ". Use a smaller context (-c), a smaller quantization, or more devices");
    }

    /// <summary>Bytes the planner counts: weights per layer, output weights, KV cache per layer, activations per device, logits.</summary>
    private sealed class Costs
    {
        public Costs(ModelFileLayout file, LlamaHyperParameters hp, LayerSplitRequest request)
        {
            LayerWeights = new long[hp.BlockCount];
            foreach (var t in file.Tensors)
            {
                int layer = LlamaTensorNames.LayerOf(t.Info.Name);
                if (layer >= 0 && layer < hp.BlockCount) LayerWeights[layer] += t.Info.ByteSize;
                else OutputWeights += t.Info.ByteSize;
            }
            ContextSize = request.ContextSize > 0 ? Math.Min(request.ContextSize, hp.ContextLength) : Math.Min(hp.ContextLength, 4096);
            BatchSize = Math.Max(1, Math.Min(request.BatchSize, ContextSize));
            KvPerLayer = 2 * GgmlTypes.RowSize(request.KvCacheType, (long)ContextSize * hp.KvDim);
            long b = BatchSize;
            Activations = b * (2L * hp.EmbeddingLength + 2L * hp.QDim + 2L * hp.KvDim + 2L * hp.FeedForwardLength) * sizeof(float);
            Logits = b * hp.VocabularySize * sizeof(float);
        }

        public long[] LayerWeights { get; }
        public long OutputWeights { get; }
        public int ContextSize { get; }
        public int BatchSize { get; }
        public long KvPerLayer { get; }
        public long Activations { get; }
        public long Logits { get; }
    }
}

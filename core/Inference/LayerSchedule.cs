using System.Text;
using PluginEngine.Abstractions;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Plugins;

namespace PluginEngine.Core.Inference;

/// <summary>
/// Which device runs each layer, and where each tensor lives (docs/architecture.md#placement). All layers on one backend, or
/// the first N layers on the primary device and the rest on the CPU (<c>-ngl N</c>). Any op the layer's device does not
/// support (<see cref="IComputeQueue.Supports"/>) runs on the CPU instead, as ggml's scheduler does: a weight whose op is
/// missing is placed on the CPU; for the other ops the context copies the activations to the CPU and back, counting them
/// (see <see cref="OpFallbacks"/> and <see cref="LlamaContext.OpFallbackCounts"/>). Without a CPU backend nothing can fall
/// back: a model that needs a missing op is refused at load with the list of missing ops (<see cref="MissingOpsException"/>).
/// </summary>
public sealed class LayerSchedule
{
    private readonly IReadOnlyDictionary<IBackendDevice, IComputeQueue> _queues;
    private readonly Dictionary<IBackendDevice, bool> _ropeFactorSupport = [];

    private readonly bool _hasBiases;

    private LayerSchedule(IBackendDevice[] layers, IBackendDevice output, IBackendDevice? cpu, IReadOnlyDictionary<IBackendDevice, IComputeQueue> queues, bool hasBiases)
    {
        _hasBiases = hasBiases;
        LayerDevices = layers;
        OutputDevice = output;
        Cpu = cpu;
        _queues = queues;
    }

    /// <summary>Device of each transformer block.</summary>
    public IReadOnlyList<IBackendDevice> LayerDevices { get; }

    /// <summary>Device of the output norm and projection (the last layer's device); also holds the token embeddings.</summary>
    public IBackendDevice OutputDevice { get; }

    /// <summary>The CPU device: the fallback for ops another device does not support. Null when no CPU backend is loaded.</summary>
    public IBackendDevice? Cpu { get; }

    /// <summary>Tensors moved to the CPU because their device lacks the op for their type, with the reason.</summary>
    public List<string> Fallbacks { get; } = [];

    /// <summary>
    /// Builds the schedule. <paramref name="gpuLayers"/>: layers on <paramref name="primary"/> counted from the first
    /// (negative or ≥ the block count: all of them); the rest run on <paramref name="cpu"/>. <paramref name="cpu"/> may be
    /// null (no CPU backend): then every layer must run on the primary device.
    /// </summary>
    public static LayerSchedule Create(LlamaHyperParameters hp, IBackendDevice primary, IBackendDevice? cpu, int gpuLayers,
        IReadOnlyDictionary<IBackendDevice, IComputeQueue> queues)
    {
        int onPrimary = gpuLayers < 0 || gpuLayers > hp.BlockCount ? hp.BlockCount : gpuLayers;
        if (cpu is null && onPrimary < hp.BlockCount)
            throw new MissingOpsException($"-ngl {gpuLayers}: the layers not on '{primary.Description.Backend}' run on the cpu backend, which is not loaded");
        var layers = new IBackendDevice[hp.BlockCount];
        for (int l = 0; l < layers.Length; l++) layers[l] = l < onPrimary ? primary : cpu!;
        return new LayerSchedule(layers, layers.Length > 0 ? layers[^1] : primary, cpu, queues, hp.HasQkvBias);
    }

    /// <summary>
    /// Builds the schedule of a split (docs/multi-gpu.md#how-a-split-is-planned): each layer on the device the split gives it
    /// (contiguous ranges over several devices, the rest on the CPU), the output and embeddings on the split's output device.
    /// </summary>
    public static LayerSchedule Create(LlamaHyperParameters hp, LayerSplit split, IBackendDevice? cpu, IReadOnlyDictionary<IBackendDevice, IComputeQueue> queues)
    {
        if (split.LayerDevices.Count != hp.BlockCount) throw new ArgumentException($"the split places {split.LayerDevices.Count} layers; the model has {hp.BlockCount}", nameof(split));
        foreach (var d in split.LayerDevices.Append(split.OutputDevice).Distinct())
            if (!queues.ContainsKey(d)) throw new ArgumentException($"no queue for {LayerSplitPlanner.Label(d)}", nameof(queues));
        return new LayerSchedule(split.LayerDevices.ToArray(), split.OutputDevice, cpu, queues, hp.HasQkvBias) { Split = split };
    }

    /// <summary>The split this schedule was built from (per-device bytes, transfers per token); null for schedules made with <c>-ngl</c> alone.</summary>
    public LayerSplit? Split { get; private init; }

    /// <summary>The queue of <paramref name="device"/>.</summary>
    public IComputeQueue Queue(IBackendDevice device) => _queues[device];

    /// <summary>Every device in use.</summary>
    public IEnumerable<IBackendDevice> Devices => (Cpu is null ? LayerDevices.Append(OutputDevice) : LayerDevices.Append(OutputDevice).Append(Cpu)).Distinct();

    /// <summary>The device a tensor is loaded onto.</summary>
    public IBackendDevice AssignTensor(TensorInfo tensor)
    {
        int layer = LlamaTensorNames.LayerOf(tensor.Name);
        var device = layer >= 0 && layer < LayerDevices.Count ? LayerDevices[layer] : OutputDevice;
        if (tensor.Name == LlamaTensorNames.RopeFrequencies) return AssignRopeFrequencyFactors(device);
        if (device == Cpu) return device;
        var queue = _queues[device];
        if (tensor.Type == GgmlType.F32 && tensor.Dims.Count == 1)
        {
            // Norm weights and biases stay with their layer, unless the op that reads them runs on the CPU.
            var op = tensor.Name.EndsWith(".bias", StringComparison.Ordinal) ? ComputeOp.AddBias : ComputeOp.RmsNorm;
            return queue.Supports(op, GgmlType.F32) ? device : FallBack(tensor, device, op.ToString());
        }
        bool isEmbedding = tensor.Name == LlamaTensorNames.TokenEmbedding;
        bool ok = queue.Supports(ComputeOp.MatMul, tensor.Type) && (!isEmbedding || queue.Supports(ComputeOp.GetRows, tensor.Type));
        return ok ? device : FallBack(tensor, device, isEmbedding ? "GetRows/MatMul" : "MatMul");
    }

    private IBackendDevice FallBack(TensorInfo tensor, IBackendDevice device, string op)
    {
        if (Cpu is null)
            throw new MissingOpsException($"backend '{device.Description.Backend}' cannot run this model without the cpu backend (not loaded): " +
                                          $"missing ops: {string.Join(", ", MissingOps(device, GgmlType.F16, [tensor.Type]))}");
        Fallbacks.Add($"{tensor.Name} ({tensor.Type}) on cpu: {device.Description.Backend} does not support {op} for {tensor.Type}");
        return Cpu;
    }

    /// <summary>
    /// The ops (with their type) that <paramref name="device"/> does not support and a model with <paramref name="weightTypes"/>
    /// and a KV cache of <paramref name="kvCacheType"/> needs, e.g. "Rope (F32)", "Attention (F16)".
    /// </summary>
    public IReadOnlyList<string> MissingOps(IBackendDevice device, GgmlType kvCacheType, IEnumerable<GgmlType>? weightTypes = null)
    {
        var queue = _queues[device];
        var missing = new List<string>();
        foreach (var op in new[] { ComputeOp.RmsNorm, ComputeOp.Rope, ComputeOp.SiluMul, ComputeOp.Add, ComputeOp.AddBias })
            if ((op != ComputeOp.AddBias || _hasBiases) && !queue.Supports(op, GgmlType.F32)) missing.Add($"{op} (F32)");
        foreach (var op in new[] { ComputeOp.Attention, ComputeOp.Convert })
            if (!queue.Supports(op, kvCacheType)) missing.Add($"{op} ({kvCacheType})");
        foreach (var type in (weightTypes ?? []).Distinct())
            if (!queue.Supports(ComputeOp.MatMul, type)) missing.Add($"{ComputeOp.MatMul} ({type})");
        return missing;
    }

    /// <summary>
    /// The ops each non-CPU device in use runs on the CPU for a KV cache of <paramref name="kvCacheType"/> (activations copied
    /// there and back, counted), one line per device; empty when every op runs where its layer is.
    /// </summary>
    public IReadOnlyList<string> OpFallbacks(GgmlType kvCacheType)
        => LayerDevices.Append(OutputDevice).Distinct().Where(d => d != Cpu)
            .Select(d => (Device: d, Missing: MissingOps(d, kvCacheType)))
            .Where(x => x.Missing.Count > 0)
            .Select(x => $"{x.Device.Description.Backend} runs on cpu: {string.Join(", ", x.Missing)}" +
                         (x.Missing.Any(m => m.StartsWith("Attention", StringComparison.Ordinal) || m.StartsWith("Convert", StringComparison.Ordinal))
                             ? $" (its layers' {kvCacheType} KV cache lives on the cpu)" : ""))
            .ToList();

    /// <summary>Throws <see cref="MissingOpsException"/> when an op is missing and there is no CPU backend to run it.</summary>
    public void RequireOps(GgmlType kvCacheType)
    {
        if (Cpu is not null) return;
        foreach (var d in LayerDevices.Append(OutputDevice).Distinct())
            if (MissingOps(d, kvCacheType) is { Count: > 0 } missing)
                throw new MissingOpsException($"backend '{d.Description.Backend}' cannot run this model without the cpu backend (not loaded): missing ops: {string.Join(", ", missing)}");
    }

    /// <summary>
    /// Whether <paramref name="device"/>'s queue runs <see cref="IComputeQueue.RopeWithFactors"/>: its plugin must have been
    /// compiled against API 1.1 or later (where the member exists) and say so in <see cref="IComputeQueue.Supports"/>. The
    /// version check matters because a 1.0 plugin whose Supports ends in a catch-all (<c>_ =&gt; type == F32</c>) answers
    /// true for an op it has never heard of, and would then hit the interface's throwing default.
    /// </summary>
    public bool RunsRopeFrequencyFactors(IBackendDevice device)
    {
        if (_ropeFactorSupport.TryGetValue(device, out bool runs)) return runs;
        runs = PluginApiVersions.MinorOf(device) >= PluginApiVersions.RopeWithFactorsSince
               && _queues[device].Supports(ComputeOp.RopeFrequencyFactors, GgmlType.F32);
        _ropeFactorSupport[device] = runs;
        return runs;
    }

    /// <summary>
    /// rope_freqs.weight stays with the output (like the other model-level vectors) when that device rotates with it,
    /// and goes to the CPU otherwise. Every layer device that cannot rotate with factors is listed as a fallback: the
    /// context copies its q and k to the CPU and back for that op (see <see cref="LlamaContext"/>).
    /// </summary>
    private IBackendDevice AssignRopeFrequencyFactors(IBackendDevice device)
    {
        if (Cpu is null)
        {
            if (LayerDevices.Append(device).Distinct().FirstOrDefault(d => !RunsRopeFrequencyFactors(d)) is { } lacking)
                throw new MissingOpsException($"backend '{lacking.Description.Backend}' cannot run this model without the cpu backend (not loaded): missing ops: {nameof(ComputeOp.RopeFrequencyFactors)} (F32)");
            return device;
        }
        foreach (var d in LayerDevices.Distinct().Where(d => !RunsRopeFrequencyFactors(d)))
            Fallbacks.Add($"{LlamaTensorNames.RopeFrequencies}: {d.Description.Backend} does not support {nameof(ComputeOp.RopeFrequencyFactors)}; " +
                          "its layers rotate q and k on cpu (copied there and back)");
        if (RunsRopeFrequencyFactors(device)) return device;
        Fallbacks.Add($"{LlamaTensorNames.RopeFrequencies} (F32) on cpu: {device.Description.Backend} does not support {nameof(ComputeOp.RopeFrequencyFactors)}");
        return Cpu;
    }

    /// <summary>One line per run of consecutive layers on one device, plus output, weight fallbacks and op fallbacks (for a KV cache of <paramref name="kvCacheType"/>, F16 by default).</summary>
    public string Describe(GgmlType kvCacheType = GgmlType.F16)
    {
        var sb = new StringBuilder();
        int start = 0;
        for (int l = 1; l <= LayerDevices.Count; l++)
        {
            if (l < LayerDevices.Count && LayerDevices[l] == LayerDevices[start]) continue;
            sb.AppendLine($"layers {start}-{l - 1}: {Name(LayerDevices[start])}");
            start = l;
        }
        sb.AppendLine($"output + embeddings: {Name(OutputDevice)}");
        if (Split is { } split) sb.Append(split.Describe());
        // Tensors that fell back for the same reason share one line ("30 tensors (Q8_0) on cpu: …"), naming the first and last.
        foreach (var group in Fallbacks.GroupBy(f => f.IndexOf(" (", StringComparison.Ordinal) is > 0 and var at ? f[at..] : f))
        {
            var names = group.Select(f => f.IndexOf(" (", StringComparison.Ordinal) is > 0 and var at ? f[..at] : "").ToList();
            sb.AppendLine(names.Count == 1 || names.Any(n => n.Length == 0)
                ? string.Join(Environment.NewLine, group.Select(f => $"fallback: {f}"))
                : $"fallback: {names.Count} tensors{group.Key} ({names[0]} … {names[^1]})");
        }
        foreach (var f in OpFallbacks(kvCacheType)) sb.AppendLine($"op fallback: {f}");
        return sb.ToString();
    }

    private static string Name(IBackendDevice d) => $"{d.Description.Backend} ({d.Description.Name})";
}

/// <summary>A backend lacks ops a model needs and nothing can run them instead (no CPU backend); the message lists them.</summary>
public sealed class MissingOpsException(string message) : Exception(message);

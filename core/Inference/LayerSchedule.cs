using System.Text;
using PluginEngine.Abstractions;
using PluginEngine.Core.Models;

namespace PluginEngine.Core.Inference;

/// <summary>
/// Which device runs each layer, and where each tensor lives (docs/architecture.md#placement). All layers on one backend, or the first
/// N layers on the primary (GPU) device and the rest on the CPU (<c>-ngl N</c>). A weight whose op the layer's device
/// does not support for its type is placed on the CPU instead; the context then runs that op there and copies the
/// activations both ways, counting the transfers.
/// </summary>
public sealed class LayerSchedule
{
    private readonly IReadOnlyDictionary<IBackendDevice, IComputeQueue> _queues;
    private readonly Dictionary<IBackendDevice, bool> _ropeFactorSupport = [];

    private LayerSchedule(IBackendDevice[] layers, IBackendDevice output, IBackendDevice cpu, IReadOnlyDictionary<IBackendDevice, IComputeQueue> queues)
    {
        LayerDevices = layers;
        OutputDevice = output;
        Cpu = cpu;
        _queues = queues;
    }

    /// <summary>Device of each transformer block.</summary>
    public IReadOnlyList<IBackendDevice> LayerDevices { get; }

    /// <summary>Device of the output norm and projection (the last layer's device); also holds the token embeddings.</summary>
    public IBackendDevice OutputDevice { get; }

    /// <summary>The CPU device: the fallback for ops another device does not support.</summary>
    public IBackendDevice Cpu { get; }

    /// <summary>Tensors moved to the CPU because their device lacks the op for their type, with the reason.</summary>
    public List<string> Fallbacks { get; } = [];

    /// <summary>
    /// Builds the schedule. <paramref name="gpuLayers"/>: layers on <paramref name="primary"/> counted from the first
    /// (negative or ≥ the block count: all of them); the rest run on <paramref name="cpu"/>.
    /// </summary>
    public static LayerSchedule Create(LlamaHyperParameters hp, IBackendDevice primary, IBackendDevice cpu, int gpuLayers,
        IReadOnlyDictionary<IBackendDevice, IComputeQueue> queues)
    {
        int onPrimary = gpuLayers < 0 || gpuLayers > hp.BlockCount ? hp.BlockCount : gpuLayers;
        var layers = new IBackendDevice[hp.BlockCount];
        for (int l = 0; l < layers.Length; l++) layers[l] = l < onPrimary ? primary : cpu;
        return new LayerSchedule(layers, layers.Length > 0 ? layers[^1] : primary, cpu, queues);
    }

    /// <summary>The queue of <paramref name="device"/>.</summary>
    public IComputeQueue Queue(IBackendDevice device) => _queues[device];

    /// <summary>Every device in use.</summary>
    public IEnumerable<IBackendDevice> Devices => LayerDevices.Append(OutputDevice).Append(Cpu).Distinct();

    /// <summary>The device a tensor is loaded onto.</summary>
    public IBackendDevice AssignTensor(TensorInfo tensor)
    {
        int layer = LlamaTensorNames.LayerOf(tensor.Name);
        var device = layer >= 0 && layer < LayerDevices.Count ? LayerDevices[layer] : OutputDevice;
        if (tensor.Name == LlamaTensorNames.RopeFrequencies) return AssignRopeFrequencyFactors(device);
        if (device == Cpu || tensor.Type == GgmlType.F32 && tensor.Dims.Count == 1) return device; // norms/biases stay with their layer
        var queue = _queues[device];
        bool isEmbedding = tensor.Name == LlamaTensorNames.TokenEmbedding;
        bool ok = queue.Supports(ComputeOp.MatMul, tensor.Type) && (!isEmbedding || queue.Supports(ComputeOp.GetRows, tensor.Type));
        if (ok) return device;
        Fallbacks.Add($"{tensor.Name} ({tensor.Type}) on cpu: {device.Description.Backend} does not support {(isEmbedding ? "GetRows/MatMul" : "MatMul")} for {tensor.Type}");
        return Cpu;
    }

    /// <summary>
    /// Whether <paramref name="device"/>'s queue runs <see cref="IComputeQueue.RopeWithFactors"/>: it must say so in
    /// <see cref="IComputeQueue.Supports"/> and actually override the member. The second check matters because the op was
    /// added after plugin API v1: a plugin compiled earlier whose Supports ends in a catch-all (<c>_ =&gt; type == F32</c>)
    /// answers true for an op it has never heard of, and would then hit the interface's throwing default.
    /// </summary>
    public bool RunsRopeFrequencyFactors(IBackendDevice device)
    {
        if (_ropeFactorSupport.TryGetValue(device, out bool runs)) return runs;
        var queue = _queues[device];
        runs = queue.Supports(ComputeOp.RopeFrequencyFactors, GgmlType.F32) && Overrides(queue, nameof(IComputeQueue.RopeWithFactors));
        _ropeFactorSupport[device] = runs;
        return runs;
    }

    /// <summary>True when <paramref name="queue"/>'s class implements interface member <paramref name="method"/> itself (not the default body).</summary>
    private static bool Overrides(IComputeQueue queue, string method)
    {
        var map = queue.GetType().GetInterfaceMap(typeof(IComputeQueue));
        for (int i = 0; i < map.InterfaceMethods.Length; i++)
            if (map.InterfaceMethods[i].Name == method) return map.TargetMethods[i].DeclaringType != typeof(IComputeQueue);
        return false;
    }

    /// <summary>
    /// rope_freqs.weight stays with the output (like the other model-level vectors) when that device rotates with it,
    /// and goes to the CPU otherwise. Every layer device that cannot rotate with factors is listed as a fallback: the
    /// context copies its q and k to the CPU and back for that op (see <see cref="LlamaContext"/>).
    /// </summary>
    private IBackendDevice AssignRopeFrequencyFactors(IBackendDevice device)
    {
        foreach (var d in LayerDevices.Distinct().Where(d => !RunsRopeFrequencyFactors(d)))
            Fallbacks.Add($"{LlamaTensorNames.RopeFrequencies}: {d.Description.Backend} does not support {nameof(ComputeOp.RopeFrequencyFactors)}; " +
                          "its layers rotate q and k on cpu (copied there and back)");
        if (RunsRopeFrequencyFactors(device)) return device;
        Fallbacks.Add($"{LlamaTensorNames.RopeFrequencies} (F32) on cpu: {device.Description.Backend} does not support {nameof(ComputeOp.RopeFrequencyFactors)}");
        return Cpu;
    }

    /// <summary>One line per run of consecutive layers on one device, plus output and fallbacks.</summary>
    public string Describe()
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
        foreach (var f in Fallbacks) sb.AppendLine($"fallback: {f}");
        return sb.ToString();
    }

    private static string Name(IBackendDevice d) => $"{d.Description.Backend} ({d.Description.Name})";
}

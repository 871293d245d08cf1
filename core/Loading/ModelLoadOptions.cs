using PluginEngine.Abstractions;

namespace PluginEngine.Core.Loading;

/// <summary>How to load a model: devices, layer split and memory mode.</summary>
/// <param name="Primary">Device for the offloaded layers (the CPU itself for CPU-only runs).</param>
/// <param name="Cpu">The CPU device (the rest of the layers and op fallbacks); null when no CPU backend is loaded (then every
/// layer runs on <paramref name="Primary"/>, which must support every op the model needs).</param>
/// <param name="GpuLayers">Layers on <paramref name="Primary"/> counted from the first; negative = all.</param>
/// <param name="Load">Memory mode and host-import switch.</param>
public sealed record ModelLoadOptions(IBackendDevice Primary, IBackendDevice? Cpu, int GpuLayers, LoadOptions Load)
{
    /// <summary>Decode every weight before loading and reject NaN/Inf, naming the tensor (<c>--check-tensors</c>; reads the whole file once).</summary>
    public bool CheckTensors { get; init; }

    /// <summary>
    /// The placement targets the offloaded layers are split over, in order (docs/multi-gpu.md): the devices of the selected
    /// backend(s). Null: <see cref="Primary"/> alone, as before splits existed.
    /// </summary>
    public IReadOnlyList<IBackendDevice>? Devices { get; init; }

    /// <summary>Split mode, proportions, main device and the context the memory estimate is for (<c>--split-mode</c>, <c>--tensor-split</c>, <c>--main-gpu</c>).</summary>
    public LayerSplitRequest Split { get; init; } = new();

    /// <summary>The split's placement targets: <see cref="Devices"/>, or <see cref="Primary"/> alone.</summary>
    public IReadOnlyList<IBackendDevice> SplitDevices => Devices is { Count: > 0 } d ? d : [Primary];
}

using PluginEngine.Abstractions;

namespace PluginEngine.Core.Loading;

/// <summary>Where one tensor ended up: a buffer and an offset in it.</summary>
/// <param name="Placement">The final decision (after any import fallback).</param>
/// <param name="Buffer">The buffer holding it.</param>
/// <param name="BufferOffset">Offset of the tensor's first byte in the buffer.</param>
public sealed record TensorBinding(TensorPlacement Placement, BackendBuffer Buffer, long BufferOffset)
{
    /// <summary>The tensor.</summary>
    public TensorInfo Tensor => Placement.Tensor;

    /// <summary>Its device.</summary>
    public IBackendDevice Device => Placement.Device;

    /// <summary>Device address of the tensor (buffer's device address + offset); 0 when the backend uses opaque handles.</summary>
    public nint DeviceAddress => Buffer.DeviceAddress == 0 ? 0 : Buffer.DeviceAddress + (nint)BufferOffset;
}

/// <summary>Counters of one load.</summary>
public sealed record LoadStatistics(long BytesUploaded, long BytesImported, long BytesReadIntoMapping, int ImportFallbacks, TimeSpan Elapsed);

/// <summary>
/// A model's weights, placed on their devices. Owns the buffers and the mapping; disposing releases them in
/// the one safe order: device buffers (imports unregistered, their leases released) → mapping (unmap → close).
/// </summary>
public sealed class LoadedWeights : IDisposable
{
    private readonly List<BackendBuffer> _buffers;
    private IModelMapping? _mapping;

    internal LoadedWeights(PlacementPlan plan, IReadOnlyList<TensorPlacement> finalPlacements, Dictionary<string, TensorBinding> bindings,
        List<BackendBuffer> buffers, IModelMapping? mapping, LoadStatistics stats, IReadOnlyList<string> log)
    {
        Plan = plan;
        FinalPlacements = finalPlacements;
        Tensors = bindings;
        _buffers = buffers;
        _mapping = mapping;
        Statistics = stats;
        Log = log;
    }

    /// <summary>The plan the load started from.</summary>
    public PlacementPlan Plan { get; }

    /// <summary>Every tensor's final placement (imports that were refused appear as <see cref="PlacementKind.Copied"/>).</summary>
    public IReadOnlyList<TensorPlacement> FinalPlacements { get; }

    /// <summary>Bindings by tensor name.</summary>
    public IReadOnlyDictionary<string, TensorBinding> Tensors { get; }

    /// <summary>Every buffer created.</summary>
    public IReadOnlyList<BackendBuffer> Buffers => _buffers;

    /// <summary>The host mapping, while some buffer imports it (null when it was released after loading).</summary>
    public IModelMapping? Mapping => _mapping;

    /// <summary>Counters.</summary>
    public LoadStatistics Statistics { get; }

    /// <summary>Every decision the load made, in order (also written to the logger).</summary>
    public IReadOnlyList<string> Log { get; }

    /// <summary>Binding of <paramref name="name"/>, or a clear error.</summary>
    public TensorBinding Get(string name)
        => Tensors.TryGetValue(name, out var b) ? b : throw new KeyNotFoundException($"tensor '{name}' was not loaded");

    /// <summary>Releases buffers (imports first unregister, then release their leases), then the mapping.</summary>
    public void Dispose() => ModelLoader.Teardown(_buffers, ref _mapping);
}

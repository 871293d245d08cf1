using System.Text;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Loading;

/// <summary>How a tensor's bytes reach its device.</summary>
public enum PlacementKind
{
    /// <summary>The device uses the mapping's pages in place (host import, or the CPU reading the mapping).</summary>
    Imported,
    /// <summary>The device owns a buffer; the loader uploads the tensor into it and the backend zeroes the slide.</summary>
    Owned,
    /// <summary>The device wanted to import but could not use the file's bytes in place; it gets an owned copy.</summary>
    Copied,
}

/// <summary>The decision for one tensor.</summary>
/// <param name="Tensor">The tensor.</param>
/// <param name="Device">Its device.</param>
/// <param name="Kind">How its bytes get there.</param>
/// <param name="AllocSize">Bytes the device's kernels may touch (tensor + slide).</param>
/// <param name="FileOffset">Where its bytes are in the file.</param>
/// <param name="MappingOffset">Where its bytes are in the host mapping (equals FileOffset for file mappings; the loader's layout otherwise).</param>
/// <param name="Reason">Why this decision (printed by inspect --plan and run -v).</param>
public sealed record TensorPlacement(
    TensorInfo Tensor,
    IBackendDevice Device,
    PlacementKind Kind,
    long AllocSize,
    long FileOffset,
    long MappingOffset,
    string Reason)
{
    /// <summary>Bytes after the tensor that kernels may read and that must be zero.</summary>
    public long SlideBytes => AllocSize - Tensor.ByteSize;
}

/// <summary>A page-aligned range of the mapping that one device imports, and the tensors bound inside it.</summary>
public sealed record ImportRange(IBackendDevice Device, long Offset, long Length, IReadOnlyList<TensorPlacement> Tensors)
{
    /// <summary>One past the last byte.</summary>
    public long End => Offset + Length;
}

/// <summary>The complete placement of a model's tensors, decided before any byte is copied.</summary>
public sealed class PlacementPlan
{
    internal PlacementPlan(ModelFileLayout file, LoadOptions options, long mappingLength,
        IReadOnlyList<TensorPlacement> tensors, IReadOnlyList<ImportRange> imports, IReadOnlyDictionary<IBackendDevice, string> deviceDecisions)
    {
        File = file;
        Options = options;
        MappingLength = mappingLength;
        Tensors = tensors;
        Imports = imports;
        DeviceDecisions = deviceDecisions;
    }

    /// <summary>The model file.</summary>
    public ModelFileLayout File { get; }

    /// <summary>Options the plan was made with.</summary>
    public LoadOptions Options { get; }

    /// <summary>True when the mapping's layout is the loader's (hugepages/anonymous/heap), false for the file's own layout.</summary>
    public bool UsesLoaderLayout => Options.Memory != ModelMemoryMode.FileMapping;

    /// <summary>Bytes the host mapping needs.</summary>
    public long MappingLength { get; }

    /// <summary>Every tensor's decision, in file order.</summary>
    public IReadOnlyList<TensorPlacement> Tensors { get; }

    /// <summary>Page-aligned ranges to import, per device.</summary>
    public IReadOnlyList<ImportRange> Imports { get; }

    /// <summary>The host-import policy's decision per device, with its reason.</summary>
    public IReadOnlyDictionary<IBackendDevice, string> DeviceDecisions { get; }

    /// <summary>Owned bytes a device needs (sum of aligned alloc sizes of its owned and copied tensors).</summary>
    public long OwnedBytes(IBackendDevice device)
        => Tensors.Where(t => t.Device == device && t.Kind != PlacementKind.Imported)
                  .Sum(t => TensorPadding.AlignUp(t.AllocSize, device.Buffers.Alignment));

    /// <summary>A human-readable plan: per device, the policy decision, counts, and every tensor that was not imported as wanted.</summary>
    public string Format(bool everyTensor = false)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"memory: {Options.Memory}, host import {Options.HostImport.Mode} ({Options.HostImport.Source}){(Options.HostImport.Note is { } n ? "; " + n : "")}");
        foreach (var (device, decision) in DeviceDecisions)
        {
            var mine = Tensors.Where(t => t.Device == device).ToList();
            int imported = mine.Count(t => t.Kind == PlacementKind.Imported);
            int owned = mine.Count(t => t.Kind == PlacementKind.Owned);
            int copied = mine.Count(t => t.Kind == PlacementKind.Copied);
            sb.AppendLine($"device {device.Description.Backend}:{device.Description.StableId} ({device.Description.Name}, {device.Description.Kind}): {decision}");
            sb.AppendLine($"  tensors: {imported} imported, {owned} owned, {copied} copied; owned bytes {OwnedBytes(device):N0}; slides {mine.Sum(t => t.SlideBytes):N0} B");
            foreach (var r in Imports.Where(r => r.Device == device))
                sb.AppendLine($"  import range [{r.Offset:N0}, {r.End:N0}) {r.Length:N0} B, {r.Tensors.Count} tensors");
            foreach (var t in mine.Where(t => everyTensor || t.Kind == PlacementKind.Copied))
                sb.AppendLine($"  {t.Kind,-8} {t.Tensor.Name} {t.Tensor.Type} [{string.Join(",", t.Tensor.Dims)}] {t.Tensor.ByteSize:N0} B + slide {t.SlideBytes} B @ file {t.FileOffset:N0}: {t.Reason}");
        }
        return sb.ToString();
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Core.Memory;

namespace PluginEngine.Core.Loading;

/// <summary>Reads <c>destination.Length</c> bytes of the model file at <paramref name="offset"/>.</summary>
public delegate void FileBytesReader(long offset, Span<byte> destination);

/// <summary>
/// Decides, before any byte moves, where every tensor lives and how its bytes get there (docs/architecture.md#placement).
/// This is the only place that reasons about slides: backends declare them through
/// <see cref="IBufferProvider.GetAllocSize"/>, and the plan guarantees that every byte a kernel may read
/// past a tensor is zero, without ever writing to a file mapping.
/// </summary>
public static class PlacementPlanner
{
    /// <summary>Largest host range imported as one buffer; larger spans are split at tensor boundaries so a refusal costs less.</summary>
    public const long MaxImportRangeBytes = 1L << 30;

    /// <summary>Alignment of tensors in the loader's own layouts (at least a cache line).</summary>
    private const long MinLayoutAlignment = 64;

    /// <summary>Makes the plan, reading gap bytes from <see cref="ModelFileLayout.Path"/> through one handle opened on first need.</summary>
    public static PlacementPlan Plan(ModelFileLayout file, Func<TensorInfo, IBackendDevice> assign, LoadOptions options)
    {
        Microsoft.Win32.SafeHandles.SafeFileHandle? handle = null;
        try
        {
            return Plan(file, assign, options, (offset, destination) =>
            {
                handle ??= File.OpenHandle(file.Path, FileMode.Open, FileAccess.Read, FileShare.Read);
                if (RandomAccess.Read(handle, destination, offset) != destination.Length)
                    throw new EndOfStreamException($"{file.Path}: short read of {destination.Length} B at offset {offset}");
            });
        }
        finally
        {
            handle?.Dispose();
        }
    }

    /// <summary>Makes the plan.</summary>
    /// <param name="file">The model file's layout.</param>
    /// <param name="assign">Which device each tensor goes to (the scheduler's decision).</param>
    /// <param name="options">Memory mode and host-import switch.</param>
    /// <param name="readFile">Reads file bytes: used to check that the gap after a file-mapped tensor is zero.</param>
    public static PlacementPlan Plan(ModelFileLayout file, Func<TensorInfo, IBackendDevice> assign, LoadOptions options, FileBytesReader readFile)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(assign);
        long pageSize = options.Memory == ModelMemoryMode.HugePages ? HugePagePool.HugePageSize : Environment.SystemPageSize;
        var decisions = new Dictionary<IBackendDevice, (bool Import, string Reason)>();
        var placements = new List<TensorPlacement>(file.Tensors.Count);
        bool loaderLayout = options.Memory != ModelMemoryMode.FileMapping;
        long cursor = 0;
        IBackendDevice? previousDevice = null;

        for (int i = 0; i < file.TensorsByOffset.Count; i++)
        {
            var ft = file.TensorsByOffset[i];
            var device = assign(ft.Info);
            if (!decisions.TryGetValue(device, out var decision))
                decisions[device] = decision = HostImportPolicy.Decide(device.Description, options.Memory, options.HostImport);
            long allocSize = device.Buffers.GetAllocSize(ft.Info);
            if (allocSize < ft.Info.ByteSize)
                throw new InvalidOperationException($"{device.Description.Backend}: GetAllocSize('{ft.Info.Name}') = {allocSize} is smaller than the tensor ({ft.Info.ByteSize} B)");
            long slide = allocSize - ft.Info.ByteSize;

            if (loaderLayout)
            {
                // Our own layout: a device switch starts on a fresh page so two devices never import the same page;
                // every slide is reserved after its tensor and is zero (fresh pages, or zeroed by the loader).
                long align = Math.Max(MinLayoutAlignment, device.Buffers.Alignment);
                if (previousDevice is not null && previousDevice != device) cursor = TensorPadding.AlignUp(cursor, pageSize);
                long offset = TensorPadding.AlignUp(cursor, align);
                cursor = offset + allocSize;
                previousDevice = device;
                var kind = decision.Import ? PlacementKind.Imported : PlacementKind.Owned;
                string reason = decision.Import
                    ? slide > 0 ? $"in place; slide of {slide} B reserved in the loader's layout" : "in place"
                    : slide > 0 ? $"owned; backend zeroes the {slide} B slide" : "owned";
                placements.Add(new TensorPlacement(ft.Info, device, kind, allocSize, ft.FileOffset, offset, reason));
                continue;
            }

            // The file's own layout: the tensor can be used in place only if its slide fits in the gap before the
            // next tensor (or the end of the file) and those gap bytes are already zero. Nothing is ever written here.
            if (!decision.Import)
            {
                placements.Add(new TensorPlacement(ft.Info, device, PlacementKind.Owned, allocSize, ft.FileOffset, ft.FileOffset,
                    slide > 0 ? $"owned; backend zeroes the {slide} B slide" : "owned"));
                continue;
            }
            string? refusal = CheckInPlace(file, i, ft, slide, device, readFile);
            placements.Add(refusal is null
                ? new TensorPlacement(ft.Info, device, PlacementKind.Imported, allocSize, ft.FileOffset, ft.FileOffset,
                    slide > 0 ? $"in place; {slide} B slide lies in the zero gap after the tensor" : "in place")
                : new TensorPlacement(ft.Info, device, PlacementKind.Copied, allocSize, ft.FileOffset, ft.FileOffset, refusal));
        }

        long mappingLength = loaderLayout ? Math.Max(pageSize, TensorPadding.AlignUp(cursor, pageSize)) : file.FileLength;
        var imports = BuildImportRanges(placements, pageSize, mappingLength);
        return new PlacementPlan(file, options, mappingLength, placements, imports,
            decisions.ToDictionary(kv => kv.Key, kv => (kv.Value.Import ? "imports: " : "owned: ") + kv.Value.Reason));
    }

    /// <summary>Null when the tensor can be used in place from the file mapping; otherwise why it needs an owned copy.</summary>
    private static string? CheckInPlace(ModelFileLayout file, int index, FileTensor ft, long slide, IBackendDevice device, FileBytesReader readFile)
    {
        long align = device.Buffers.Alignment;
        if (ft.FileOffset % align != 0)
            return $"copied: file offset {ft.FileOffset} is not aligned to the {align} B the device requires";
        if (slide == 0) return null;
        long gap = file.NextStart(index) - ft.FileEnd;
        string next = index + 1 < file.TensorsByOffset.Count ? $"'{file.TensorsByOffset[index + 1].Info.Name}'" : "the end of the file";
        if (slide > gap)
            return $"copied: its {slide} B slide does not fit in the {gap} B gap before {next} (zeroing in place would overwrite it, and the file mapping is read-only)";
        Span<byte> bytes = slide <= 4096 ? stackalloc byte[(int)slide] : new byte[slide];
        readFile(ft.FileEnd, bytes);
        int dirty = bytes.IndexOfAnyExcept((byte)0);
        return dirty < 0 ? null : $"copied: its {slide} B slide fits in the gap but gap byte {ft.FileEnd + dirty} is not zero";
    }

    /// <summary>
    /// Groups each device's imported tensors into page-aligned ranges computed from padded ends (offset + alloc size).
    /// A range closes when another device's imported tensor intervenes, or when it would exceed <see cref="MaxImportRangeBytes"/>
    /// and the next tensor starts on a page of its own.
    /// </summary>
    private static List<ImportRange> BuildImportRanges(List<TensorPlacement> placements, long pageSize, long mappingLength)
    {
        var ranges = new List<ImportRange>();
        IBackendDevice? device = null;
        long start = 0, end = 0;
        var members = new List<TensorPlacement>();

        void Close()
        {
            if (device is not null && members.Count > 0)
                ranges.Add(new ImportRange(device, start, Math.Min(end, mappingLength) - start, members.ToArray()));
            members.Clear();
            device = null;
        }

        foreach (var p in placements.Where(p => p.Kind == PlacementKind.Imported).OrderBy(p => p.MappingOffset))
        {
            long pStart = TensorPadding.AlignDown(p.MappingOffset, pageSize);
            long pEnd = TensorPadding.AlignUp(p.MappingOffset + p.AllocSize, pageSize);
            // Split only on a clean page boundary, so one device never registers the same page twice.
            if (device != p.Device || (pEnd - start > MaxImportRangeBytes && pStart >= end)) Close();
            if (device is null)
            {
                device = p.Device;
                start = pStart;
                end = pEnd;
            }
            end = Math.Max(end, pEnd);
            members.Add(p);
        }
        Close();
        return ranges;
    }
}

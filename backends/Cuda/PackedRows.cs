using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cuda;

/// <summary>
/// The device row layout of Q4_0 and Q8_0 weights in owned buffers (kernels.cu, "Device row layout"): each row's block
/// quants first, 16-byte aligned, then its f16 scales. Same row size as GGUF's layout. This class has the eligibility
/// rule and a host implementation of both directions (used to hand back GGUF bytes on download; the device packs
/// with the pack_rows kernel).
/// </summary>
internal static class PackedRows
{
    /// <summary>Rows must be whole multiples of this many elements (8 blocks: rows, and so every block's quants, stay 16-byte aligned).</summary>
    public const int RowMultiple = 256;

    /// <summary>Quant bytes of one 32-element block, for the types that have a device row layout; 0 for the others.</summary>
    public static int QuantBytes(GgmlType type) => type switch
    {
        GgmlType.Q4_0 => 16,
        GgmlType.Q8_0 => 32,
        _ => 0,
    };

    /// <summary>Whether a tensor of this type, shape and offset is held in the device row layout when packing is on.</summary>
    public static bool CanPack(TensorInfo tensor, long offset)
        => QuantBytes(tensor.Type) > 0 && tensor.RowLength % RowMultiple == 0 && offset % 16 == 0 && tensor.ByteSize > 0;

    /// <summary>Converts whole rows from GGUF's block layout to the device row layout (<paramref name="toDevice"/>) or back.</summary>
    public static void Convert(ReadOnlySpan<byte> source, Span<byte> destination, int blocksPerRow, int quantBytes, bool toDevice)
    {
        int blockBytes = quantBytes + 2;
        long rowBytes = (long)blocksPerRow * blockBytes;
        if (source.Length != destination.Length || source.Length % rowBytes != 0)
            throw new ArgumentException($"packed rows: {source.Length} → {destination.Length} B is not whole {rowBytes}-byte rows");
        int scalesAt = blocksPerRow * quantBytes;
        for (long row = 0; row < source.Length / rowBytes; row++)
        {
            var s = source.Slice((int)(row * rowBytes), (int)rowBytes);
            var d = destination.Slice((int)(row * rowBytes), (int)rowBytes);
            for (int b = 0; b < blocksPerRow; b++)
            {
                int block = b * blockBytes, quants = b * quantBytes, scale = scalesAt + 2 * b;
                if (toDevice)
                {
                    s.Slice(block, 2).CopyTo(d.Slice(scale, 2));
                    s.Slice(block + 2, quantBytes).CopyTo(d.Slice(quants, quantBytes));
                }
                else
                {
                    s.Slice(scale, 2).CopyTo(d.Slice(block, 2));
                    s.Slice(quants, quantBytes).CopyTo(d.Slice(block + 2, quantBytes));
                }
            }
        }
    }
}

/// <summary>
/// Which tensors of one owned buffer are in the device row layout. A tensor registered by InitTensor (and eligible) is
/// packed as soon as all its bytes have been written in order from its start, which is how the loader uploads; a write
/// over a packed tensor unpacks it first (and it is packed again once whole), a download hands back GGUF's bytes. The
/// queue asks <see cref="IsPackedAt"/> which kernels read a weight. Thread-safe: lookups read an immutable snapshot.
/// </summary>
internal sealed class PackedRegions
{
    /// <summary>Converts a registered tensor's rows in place on the device.</summary>
    public interface IConverter
    {
        void ConvertInPlace(Region region, bool toDevice);
    }

    /// <summary>One eligible tensor: where it is, its rows, and how much of it has been written from its start.</summary>
    public sealed class Region(long start, long bytes, long rowBytes, int blocksPerRow, int quantBytes)
    {
        public long Start { get; } = start;
        public long Bytes { get; } = bytes;
        public long End => Start + Bytes;
        public long RowBytes { get; } = rowBytes;
        public long Rows => Bytes / RowBytes;
        public int BlocksPerRow { get; } = blocksPerRow;
        public int QuantBytes { get; } = quantBytes;
        public long WrittenPrefix { get; set; }
        public bool Packed { get; set; }

        public bool Overlaps(long offset, long length) => offset < End && Start < offset + length;
    }

    private readonly IConverter _converter;
    private readonly object _gate = new();
    private readonly List<Region> _regions = []; // sorted by Start, disjoint
    private volatile Region[] _packed = []; // the packed ones, sorted by Start

    public PackedRegions(IConverter converter) => _converter = converter;

    /// <summary>A tensor placed at <paramref name="offset"/>: forgets regions it overlaps and, when eligible, tracks it.</summary>
    public void Register(TensorInfo tensor, long offset)
    {
        lock (_gate)
        {
            _regions.RemoveAll(r => r.Overlaps(offset, tensor.ByteSize));
            if (PackedRows.CanPack(tensor, offset))
            {
                var region = new Region(offset, tensor.ByteSize, tensor.RowBytes, checked((int)(tensor.RowLength / 32)), PackedRows.QuantBytes(tensor.Type));
                int at = _regions.FindIndex(r => r.Start > offset);
                _regions.Insert(at < 0 ? _regions.Count : at, region);
            }
            Publish();
        }
    }

    /// <summary>Before bytes [offset, offset + length) are written: packed tensors there go back to GGUF's layout.</summary>
    public void BeforeWrite(long offset, long length)
    {
        lock (_gate)
        {
            bool changed = false;
            foreach (var r in _regions)
                if (r.Packed && r.Overlaps(offset, length))
                {
                    _converter.ConvertInPlace(r, toDevice: false);
                    r.Packed = false;
                    changed = true;
                }
            if (changed) Publish();
        }
    }

    /// <summary>After bytes [offset, offset + length) were written: tensors now written whole are packed.</summary>
    public void AfterWrite(long offset, long length)
    {
        lock (_gate)
        {
            bool changed = false;
            foreach (var r in _regions)
            {
                if (!r.Overlaps(offset, length)) continue;
                if (offset <= r.Start + r.WrittenPrefix) r.WrittenPrefix = Math.Max(r.WrittenPrefix, Math.Min(offset + length, r.End) - r.Start);
                if (r.WrittenPrefix == r.Bytes && !r.Packed)
                {
                    _converter.ConvertInPlace(r, toDevice: true);
                    r.Packed = true;
                    changed = true;
                }
            }
            if (changed) Publish();
        }
    }

    /// <summary>Whether [offset, offset + length) overlaps a tracked tensor (packed or not).</summary>
    public bool Tracks(long offset, long length)
    {
        lock (_gate) return _regions.Exists(r => r.Overlaps(offset, length));
    }

    /// <summary>Packed tensors overlapping [offset, offset + length), for a download to convert back.</summary>
    public List<Region> PackedOverlapping(long offset, long length)
    {
        var found = new List<Region>();
        foreach (var r in _packed) if (r.Overlaps(offset, length)) found.Add(r);
        return found;
    }

    /// <summary>
    /// Whether the weight rows starting at <paramref name="offset"/> are in the device row layout. A view into a packed
    /// tensor must start on one of its rows (the layout is per row); one that does not is refused.
    /// </summary>
    public bool IsPackedAt(long offset, long rowBytes)
    {
        var packed = _packed;
        int lo = 0, hi = packed.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            var r = packed[mid];
            if (offset < r.Start) hi = mid - 1;
            else if (offset >= r.End) lo = mid + 1;
            else
            {
                if (rowBytes != r.RowBytes || (offset - r.Start) % r.RowBytes != 0)
                    throw new InvalidOperationException($"cuda: a weight view at offset {offset} with {rowBytes}-byte rows does not start on a row of the packed tensor at [{r.Start}, {r.End}) ({r.RowBytes}-byte rows)");
                return true;
            }
        }
        return false;
    }

    private void Publish() => _packed = _regions.Where(r => r.Packed).ToArray();
}

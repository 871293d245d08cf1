using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;

namespace PluginEngine.Backends.Gpu;

/// <summary>
/// The tiled copies of Q4_0 matrices held in one owned buffer (docs/gpu-kernels.md#tiled-q4_0-weights): device memory of their
/// own, made by a queue the first time a matrix reaches the mmq kernels (GpuComputeQueue.TiledCopy) and read by them instead
/// of the GGUF bytes. The buffer drops the copies of the bytes it overwrites (upload, memset, copy)
/// and frees them all when it is released, so a copy never outlives or disagrees with its matrix. Thread-safe: queues of the
/// same device may share weights.
/// </summary>
internal sealed class TiledWeightCopies
{
    private readonly GpuRuntime _runtime;
    private readonly Dictionary<(long Offset, long Rows, long Cols), ulong> _copies = []; // 0: none made (not enough free memory)

    public TiledWeightCopies(GpuRuntime runtime) => _runtime = runtime;

    /// <summary>Bytes of a tiled Q4_0 matrix: the same as its GGUF rows (18 per 32 elements).</summary>
    public static long ByteSize(long rows, long cols) => rows * GgmlTypes.RowSize(GgmlType.Q4_0, cols);

    /// <summary>
    /// The copy of the <paramref name="rows"/> × <paramref name="cols"/> Q4_0 matrix at <paramref name="offset"/>, or 0 where
    /// none is made; <paramref name="create"/> makes one (it allocates, launches tile_q4_0 and waits for it) when the device
    /// keeps <see cref="LaunchGeometry.TiledCopyReserveBytes"/> free after it, and the answer is kept either way.
    /// </summary>
    public ulong GetOrCreate(long offset, long rows, long cols, Func<ulong> create)
    {
        var key = (offset, rows, cols);
        lock (_copies)
        {
            if (_copies.TryGetValue(key, out ulong copy)) return copy;
            long bytes = ByteSize(rows, cols);
            copy = _runtime.QueryMemory().Free - bytes >= LaunchGeometry.TiledCopyReserveBytes ? create() : 0;
            _copies.Add(key, copy);
            return copy;
        }
    }

    /// <summary>Drops (and frees) the copies of matrices that overlap bytes [<paramref name="offset"/>, + <paramref name="length"/>).</summary>
    public void Invalidate(long offset, long length)
    {
        lock (_copies)
        {
            if (_copies.Count == 0) return;
            foreach (var key in _copies.Keys.Where(k => k.Offset < offset + length && offset < k.Offset + ByteSize(k.Rows, k.Cols)).ToList())
            {
                if (_copies[key] != 0) _runtime.Native.Free(_copies[key], "tiled Q4_0 copy");
                _copies.Remove(key);
            }
        }
    }

    /// <summary>Frees every copy (the buffer is being released).</summary>
    public void Clear()
    {
        lock (_copies)
        {
            foreach (ulong copy in _copies.Values)
                if (copy != 0) _runtime.Native.Free(copy, "tiled Q4_0 copy");
            _copies.Clear();
        }
    }
}

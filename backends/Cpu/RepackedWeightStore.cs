using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu;

/// <summary>
/// The repacked copies (<see cref="RepackedWeights"/>) of the weight matrices in one CPU buffer, made on a matrix's first
/// matmul and kept until the buffer is released (docs/batching.md#cpu-weights-repacked-once). The buffer's own bytes are never
/// written (an imported buffer is a file mapping, often read-only). A write to an owned buffer through the buffer API drops the
/// copies it overlaps, so a matrix uploaded again is repacked again. Thread-safe: queues of several contexts may share a buffer.
/// </summary>
internal sealed unsafe class RepackedWeightStore : IDisposable
{
    private readonly Dictionary<(long Offset, GgmlType Type, long Rows, long Cols), RepackedWeights> _entries = [];
    private bool _disposed;

    /// <summary>Bytes held by the repacked copies.</summary>
    public long Bytes
    {
        get
        {
            lock (_entries) return _entries.Values.Sum(e => e.Bytes);
        }
    }

    /// <summary>Copies held.</summary>
    public int Count
    {
        get
        {
            lock (_entries) return _entries.Count;
        }
    }

    /// <summary>
    /// The repacked copy of the <paramref name="rows"/> × <paramref name="cols"/> <paramref name="type"/> matrix at
    /// <paramref name="offset"/> (whose bytes are at <paramref name="w"/>), made now on <paramref name="pool"/> if there is none;
    /// <paramref name="created"/> tells which. The caller checked <see cref="RepackedWeights.Supports(GgmlType, long, long)"/>.
    /// </summary>
    public RepackedWeights GetOrCreate(long offset, byte* w, GgmlType type, long rows, long cols, CpuWorkerPool pool, out bool created)
    {
        var key = (offset, type, rows, cols);
        lock (_entries)
        {
            created = false;
            if (_entries.TryGetValue(key, out var packed)) return packed;
            ObjectDisposedException.ThrowIf(_disposed, this);
            packed = RepackedWeights.Create(type, w, rows, cols, pool);
            _entries.Add(key, packed);
            created = true;
            return packed;
        }
    }

    /// <summary>Drops (and frees) the copies of matrices that overlap bytes [<paramref name="offset"/>, + <paramref name="length"/>).</summary>
    public void Invalidate(long offset, long length)
    {
        lock (_entries)
        {
            if (_entries.Count == 0) return;
            List<(long, GgmlType, long, long)>? stale = null;
            foreach (var (key, packed) in _entries)
            {
                long end = key.Offset + key.Rows * GgmlTypes.RowSize(key.Type, key.Cols);
                if (key.Offset < offset + length && offset < end) (stale ??= []).Add(key);
            }
            if (stale is null) return;
            foreach (var key in stale)
            {
                _entries[key].Dispose();
                _entries.Remove(key);
            }
        }
    }

    /// <summary>Frees every copy; later requests throw.</summary>
    public void Dispose()
    {
        lock (_entries)
        {
            foreach (var packed in _entries.Values) packed.Dispose();
            _entries.Clear();
            _disposed = true;
        }
    }
}

using System.Runtime.InteropServices;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// A Q4_0 weight matrix kept in <see cref="RepackedGemm"/>'s 8-row layout (<see cref="RepackedGemm.Q4GroupBlockBytes"/> per
/// 8-row block: the packed nibbles of 8 rows side by side, then their scales as floats), made once in memory the backend owns
/// and then read by every matmul on that matrix, whatever its token count (<see cref="MatMul"/>'s prepacked path). The source
/// bytes — often a read-only file mapping — are only read. Why (docs/batching.md#cpu-weights-repacked-once): repacking at every
/// call cost about as much as the 4-token arithmetic itself, and a group of 8 rows in this layout is one sequential stream
/// (the hardware prefetcher follows it), where reading 8 rows of the file's layout is 8 short streams. Rows after the last whole
/// group of 8 are not repacked: the matmul reads them from the source, which must therefore stay valid as long as this object
/// is used. Costs 160/144 of the repacked rows' bytes (float scales instead of halves).
/// </summary>
public sealed unsafe class RepackedWeights : IDisposable
{
    private byte* _data;

    private RepackedWeights(GgmlType type, byte* data, long rows, long cols, long bytes)
    {
        Type = type; _data = data; Rows = rows; Cols = cols; Bytes = bytes;
    }

    /// <summary>The source's weight type.</summary>
    public GgmlType Type { get; }

    /// <summary>Rows of the source matrix (the repacked data holds the first <c>Rows / 8 * 8</c>).</summary>
    public long Rows { get; }

    /// <summary>Elements per row.</summary>
    public long Cols { get; }

    /// <summary>Bytes of repacked data.</summary>
    public long Bytes { get; }

    /// <summary>The repacked groups: group g (rows 8g .. 8g + 7) at <c>g * GroupBytes</c>.</summary>
    internal byte* Data
    {
        get
        {
            ObjectDisposedException.ThrowIf(_data == null, this);
            return _data;
        }
    }

    /// <summary>Bytes of one repacked group of 8 rows.</summary>
    internal long GroupBytes => Cols / 32 * RepackedGemm.Q4GroupBlockBytes;

    /// <summary>
    /// Whether a matrix of <paramref name="type"/> with <paramref name="rows"/> × <paramref name="cols"/> is kept repacked at this
    /// processor's kernel level: Q4_0 only (the one type whose repacked layout is about as small as the file's; the others'
    /// would take 1.7–2.1× the bytes), at least one group of 8 rows, the AVX2 or AVX-512 level.
    /// </summary>
    public static bool Supports(GgmlType type, long rows, long cols)
        => Supports(type, rows, cols, KernelIsaSupport.Best);

    internal static bool Supports(GgmlType type, long rows, long cols, KernelIsa isa)
        => type == GgmlType.Q4_0 && rows >= RepackedGemm.GroupRows && cols > 0 && cols % 32 == 0 && RepackedGemm.Supports(type, isa);

    /// <summary>
    /// Repacks <paramref name="rows"/> rows of <paramref name="cols"/> elements at <paramref name="w"/> (groups claimed by the
    /// threads of <paramref name="pool"/>) into newly allocated memory; <paramref name="w"/> is only read.
    /// </summary>
    public static RepackedWeights Create(GgmlType type, byte* w, long rows, long cols, CpuWorkerPool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        if (w == null) throw new ArgumentNullException(nameof(w));
        if (!Supports(type, rows, cols))
            throw new NotSupportedException($"repacked weights: {type} {rows}×{cols} is not kept repacked (Q4_0, at least 8 rows, AVX2)");
        long blocks = cols / 32, groups = rows / RepackedGemm.GroupRows;
        long bytes = checked(groups * blocks * RepackedGemm.Q4GroupBlockBytes);
        var data = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 64);
        try
        {
            pool.Run(new RepackJob(w, GgmlTypes.RowSize(type, cols), blocks, groups, data));
        }
        catch
        {
            NativeMemory.AlignedFree(data);
            throw;
        }
        return new RepackedWeights(type, data, rows, cols, bytes);
    }

    /// <summary>Frees the repacked data.</summary>
    public void Dispose()
    {
        NativeMemory.AlignedFree(_data);
        _data = null;
    }

    /// <summary>Repacks groups claimed one at a time (done once per matrix, so it allocates freely).</summary>
    private sealed class RepackJob(byte* w, long rowBytes, long blocks, long groups, byte* dst) : CpuParallelJob
    {
        private long _next;

        public override void Execute(int worker, int workerCount)
        {
            long g, groupBytes = blocks * RepackedGemm.Q4GroupBlockBytes;
            while ((g = Interlocked.Increment(ref _next) - 1) < groups)
            {
                byte* rows = w + g * RepackedGemm.GroupRows * rowBytes;
                QuantDot.PrefetchSpan(rows, RepackedGemm.GroupRows * rowBytes);
                RepackedGemm.RepackQ4_0(rows, rowBytes, blocks, dst + g * groupBytes);
            }
        }
    }
}

using System.Runtime.InteropServices;

namespace PluginEngine.Backends.Gpu.Kernels;

/// <summary>
/// The <c>MatVecTargets</c> kernel argument of matvec_q8_* and mmq_* (kernels.cu), passed by value: up to three weights that
/// one launch reads with the same quantized input rows (q, k and v; gate and up), rows of target 0 first.
/// Layout: three { weight pointer, row bytes, output pointer, rows, first row block } of 32 bytes, then count and accumulate.
/// The first row block is mmq's (<see cref="SetFirstBlock"/>); the mat-vec ignores it.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct MatVecTargets
{
    /// <summary>Targets one launch takes.</summary>
    public const int Capacity = 3;

    private fixed ulong _slots[Capacity * 4]; // per target: weight, row bytes, output, rows (low 32 bits) and first row block (high 32)

    /// <summary>Targets in use (1..3).</summary>
    public int Count;

    /// <summary>1: y += W·x (the residual stream); 0: y = W·x.</summary>
    public int Accumulate;

    public void Set(int i, ulong weight, long rowBytes, ulong output, long rows)
    {
        if ((uint)i >= Capacity) throw new ArgumentOutOfRangeException(nameof(i));
        _slots[4 * i] = weight;
        _slots[4 * i + 1] = (ulong)rowBytes;
        _slots[4 * i + 2] = output;
        _slots[4 * i + 3] = (uint)checked((int)rows);
    }

    /// <summary>mmq: the first block (grid x) of target <paramref name="i"/>'s rows.</summary>
    public void SetFirstBlock(int i, int block)
    {
        if ((uint)i >= Capacity) throw new ArgumentOutOfRangeException(nameof(i));
        _slots[4 * i + 3] = (uint)_slots[4 * i + 3] | ((ulong)(uint)block << 32);
    }

    public readonly ulong Output(int i) => _slots[4 * i + 2];

    public readonly long Rows(int i) => (long)(uint)_slots[4 * i + 3];

    /// <summary>Rows of all targets in use: the mat-vec's grid covers them, one warp a row.</summary>
    public readonly long TotalRows
    {
        get
        {
            long rows = 0;
            for (int i = 0; i < Count; i++) rows += Rows(i);
            return rows;
        }
    }
}

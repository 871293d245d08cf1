using System.Runtime.InteropServices;

namespace PluginEngine.Backends.Gpu.Kernels;

/// <summary>
/// The <c>RopeStore</c> kernel argument of matvec_rope_* (kernels.cu), passed by value: what the decode q/k/v mat-vec's
/// epilogue needs to rotate its outputs and store k and v into the caches (docs/gpu-kernels.md#decode-launches).
/// Layout: three pointers, then eight 32-bit fields (56 bytes).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RopeStore
{
    /// <summary>Role of a target's rows (2 bits each in <see cref="Roles"/>).</summary>
    public const int Output = 0, Rotate = 1, RotateStoreK = 2, StoreV = 3;

    /// <summary>The token's row of the K cache and of the V cache (device addresses).</summary>
    public ulong KCache, VCache;

    /// <summary>F32 [dims/2] RoPE frequency factors (device address), or 0.</summary>
    public ulong Factors;

    /// <summary>1: the caches are F16; 0: F32.</summary>
    public int F16;

    public int Position, HeadSize, Dims;
    public float FrequencyBase, FrequencyScale;

    /// <summary>Target i's role in bits 2i .. 2i+1.</summary>
    public int Roles;

    private readonly int _unused;

    public static int Role(int target, int role) => role << (2 * target);
}

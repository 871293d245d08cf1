using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

[assembly: InternalsVisibleTo("PluginEngine.Backends.Cpu.Tests")]

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>Instruction-set level a kernel runs at. Every level has a complete set of kernels, so tests can force each one.</summary>
public enum KernelIsa
{
    /// <summary>Plain C#, no intrinsics: the fallback for any processor.</summary>
    Scalar,
    /// <summary>256-bit AVX2 + FMA (vpmaddubsw/vpmaddwd integer dots; the Q4_0 kernels take vpdpbusd instead where the processor
    /// has AVX-VNNI, with the same exact integer sums: docs/batching.md#batch-invariance-on-the-cpu).</summary>
    Avx2,
    /// <summary>512-bit AVX-512 F + BW (the 512-bit forms of the same integer dots).</summary>
    Avx512,
}

/// <summary>Which <see cref="KernelIsa"/> levels this processor runs, and the one kernels use by default.</summary>
internal static class KernelIsaSupport
{
    /// <summary>The widest level this processor supports; what the public kernel entry points use.</summary>
    public static readonly KernelIsa Best =
        IsSupported(KernelIsa.Avx512) ? KernelIsa.Avx512 : IsSupported(KernelIsa.Avx2) ? KernelIsa.Avx2 : KernelIsa.Scalar;

    /// <summary>True when this processor can run kernels of level <paramref name="isa"/>.
    /// AVX-512 kernels also use AVX2 for odd tails, so they require both.</summary>
    public static bool IsSupported(KernelIsa isa) => isa switch
    {
        KernelIsa.Scalar => true,
        KernelIsa.Avx2 => Avx2.IsSupported && Fma.IsSupported,
        KernelIsa.Avx512 => Avx512F.IsSupported && Avx512BW.IsSupported && Avx2.IsSupported && Fma.IsSupported,
        _ => false,
    };

    /// <summary>Throws when a test (or caller) forces a level the processor cannot run: executing it would fault.</summary>
    public static void Require(KernelIsa isa)
    {
        if (!IsSupported(isa)) throw new PlatformNotSupportedException($"kernel level {isa} is not supported by this processor");
    }
}

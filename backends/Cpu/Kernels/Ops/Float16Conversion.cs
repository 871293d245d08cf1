using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// IEEE binary16 ↔ binary32 row conversion (the F16 KV cache and F16 tensors), vectorized with integer bit
/// arithmetic so it runs on any SIMD width without F16C/AVX512-FP16 intrinsics. Half → single is exact;
/// single → half rounds to nearest, ties to even, exactly like a <c>(Half)</c> cast: overflow becomes ±∞ and
/// NaN stays NaN (quiet).
/// </summary>
public static unsafe class Float16Conversion
{
    // Half → single: move exponent+mantissa up 13 bits, then rebias the exponent by (127 - 15).
    private const uint HalfExpMantMask = 0x7FFF;
    private const uint ShiftedHalfExpMask = 0x7C00u << 13;
    private const uint ExponentRebias = (127 - 15) << 23;
    private const uint InfNanExtraRebias = (128 - 16) << 23; // takes exponent 31 all the way to 255
    private const uint SubnormalBias = 1u << 23;
    private const uint SubnormalMagicBits = 113u << 23; // 2^-14, the smallest normal half

    // Single → half.
    private const uint SignMask = 0x8000_0000;
    private const uint SingleInfinityBits = 255u << 23;
    private const uint HalfOverflowBits = (127 + 16) << 23;   // 65536f: at or above this the half is infinite
    private const uint HalfMinNormalBits = 113u << 23;        // 2^-14
    private const uint DenormMagicBits = ((127 - 15) + (23 - 10) + 1) << 23; // 0.5f: its ulp is the half subnormal step 2^-24
    private const uint NormalRebiasRound = unchecked((uint)((15 - 127) << 23)) + 0xFFF;

    /// <summary>dst[i] = (float)src[i] for i in [0, n).</summary>
    public static void ToSingle(Half* src, float* dst, int n)
    {
        ushort* s = (ushort*)src;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= n - 32; i += 32)
            {
                var h = Vector512.Load(s + i);
                HalfBitsToSingle(Vector512.WidenLower(h)).Store(dst + i);
                HalfBitsToSingle(Vector512.WidenUpper(h)).Store(dst + i + 16);
            }
        if (Vector256.IsHardwareAccelerated)
            for (; i <= n - 16; i += 16)
            {
                var h = Vector256.Load(s + i);
                HalfBitsToSingle(Vector256.WidenLower(h)).Store(dst + i);
                HalfBitsToSingle(Vector256.WidenUpper(h)).Store(dst + i + 8);
            }
        if (Vector128.IsHardwareAccelerated)
            for (; i <= n - 8; i += 8)
            {
                var h = Vector128.Load(s + i);
                HalfBitsToSingle(Vector128.WidenLower(h)).Store(dst + i);
                HalfBitsToSingle(Vector128.WidenUpper(h)).Store(dst + i + 4);
            }
        for (; i < n; i++)
            dst[i] = (float)src[i];
    }

    /// <summary>dst[i] = (Half)src[i] for i in [0, n), round to nearest even.</summary>
    public static void ToHalf(float* src, Half* dst, int n)
    {
        ushort* d = (ushort*)dst;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= n - 32; i += 32)
            {
                var lo = SingleToHalfBits(Vector512.Load(src + i).AsUInt32());
                var hi = SingleToHalfBits(Vector512.Load(src + i + 16).AsUInt32());
                Vector512.Narrow(lo, hi).Store(d + i);
            }
        if (Vector256.IsHardwareAccelerated)
            for (; i <= n - 16; i += 16)
            {
                var lo = SingleToHalfBits(Vector256.Load(src + i).AsUInt32());
                var hi = SingleToHalfBits(Vector256.Load(src + i + 8).AsUInt32());
                Vector256.Narrow(lo, hi).Store(d + i);
            }
        if (Vector128.IsHardwareAccelerated)
            for (; i <= n - 8; i += 8)
            {
                var lo = SingleToHalfBits(Vector128.Load(src + i).AsUInt32());
                var hi = SingleToHalfBits(Vector128.Load(src + i + 4).AsUInt32());
                Vector128.Narrow(lo, hi).Store(d + i);
            }
        for (; i < n; i++)
            dst[i] = (Half)src[i];
    }

    /// <summary>Sixteen halves (zero-extended bit patterns) to singles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> HalfBitsToSingle(Vector512<uint> h)
    {
        var shifted = (h & Vector512.Create(HalfExpMantMask)) << 13;
        var exponent = shifted & Vector512.Create(ShiftedHalfExpMask);
        var bits = shifted + Vector512.Create(ExponentRebias);
        bits = Vector512.ConditionalSelect(Vector512.Equals(exponent, Vector512.Create(ShiftedHalfExpMask)),
            bits + Vector512.Create(InfNanExtraRebias), bits);
        // Zero and subnormals: build 2^-14 * (1 + m/1024) and subtract 2^-14, leaving m * 2^-24 exactly.
        var subnormal = ((bits + Vector512.Create(SubnormalBias)).AsSingle() - Vector512.Create(SubnormalMagicBits).AsSingle()).AsUInt32();
        bits = Vector512.ConditionalSelect(Vector512.Equals(exponent, Vector512<uint>.Zero), subnormal, bits);
        return (bits | ((h & Vector512.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>Eight halves (zero-extended bit patterns) to singles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> HalfBitsToSingle(Vector256<uint> h)
    {
        var shifted = (h & Vector256.Create(HalfExpMantMask)) << 13;
        var exponent = shifted & Vector256.Create(ShiftedHalfExpMask);
        var bits = shifted + Vector256.Create(ExponentRebias);
        bits = Vector256.ConditionalSelect(Vector256.Equals(exponent, Vector256.Create(ShiftedHalfExpMask)),
            bits + Vector256.Create(InfNanExtraRebias), bits);
        var subnormal = ((bits + Vector256.Create(SubnormalBias)).AsSingle() - Vector256.Create(SubnormalMagicBits).AsSingle()).AsUInt32();
        bits = Vector256.ConditionalSelect(Vector256.Equals(exponent, Vector256<uint>.Zero), subnormal, bits);
        return (bits | ((h & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>Four halves (zero-extended bit patterns) to singles.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> HalfBitsToSingle(Vector128<uint> h)
    {
        var shifted = (h & Vector128.Create(HalfExpMantMask)) << 13;
        var exponent = shifted & Vector128.Create(ShiftedHalfExpMask);
        var bits = shifted + Vector128.Create(ExponentRebias);
        bits = Vector128.ConditionalSelect(Vector128.Equals(exponent, Vector128.Create(ShiftedHalfExpMask)),
            bits + Vector128.Create(InfNanExtraRebias), bits);
        var subnormal = ((bits + Vector128.Create(SubnormalBias)).AsSingle() - Vector128.Create(SubnormalMagicBits).AsSingle()).AsUInt32();
        bits = Vector128.ConditionalSelect(Vector128.Equals(exponent, Vector128<uint>.Zero), subnormal, bits);
        return (bits | ((h & Vector128.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>Sixteen singles (bit patterns) to halves, each in the low 16 bits of its lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<uint> SingleToHalfBits(Vector512<uint> f)
    {
        var sign = f & Vector512.Create(SignMask);
        f ^= sign; // |f| < 2^31, so the comparisons below can be signed (native on every ISA; unsigned is emulated on AVX2)
        // Overflow to infinity, or NaN (kept quiet).
        var special = Vector512.ConditionalSelect(Vector512.GreaterThan(f.AsInt32(), Vector512.Create((int)SingleInfinityBits)).AsUInt32(),
            Vector512.Create(0x7E00u), Vector512.Create(0x7C00u));
        // Subnormal halves: adding 0.5f lets the FPU round the value onto the 2^-24 grid (to nearest even).
        var denormal = (f.AsSingle() + Vector512.Create(DenormMagicBits).AsSingle()).AsUInt32() - Vector512.Create(DenormMagicBits);
        // Normal halves: rebias, add 0xFFF plus the lowest kept mantissa bit (ties to even), drop 13 bits.
        var mantissaOdd = (f >> 13) & Vector512<uint>.One;
        var normal = (f + Vector512.Create(NormalRebiasRound) + mantissaOdd) >> 13;
        var result = Vector512.ConditionalSelect(Vector512.LessThan(f.AsInt32(), Vector512.Create((int)HalfMinNormalBits)).AsUInt32(), denormal, normal);
        result = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(f.AsInt32(), Vector512.Create((int)HalfOverflowBits)).AsUInt32(), special, result);
        return result | (sign >> 16);
    }

    /// <summary>Eight singles (bit patterns) to halves, each in the low 16 bits of its lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<uint> SingleToHalfBits(Vector256<uint> f)
    {
        var sign = f & Vector256.Create(SignMask);
        f ^= sign;
        var special = Vector256.ConditionalSelect(Vector256.GreaterThan(f.AsInt32(), Vector256.Create((int)SingleInfinityBits)).AsUInt32(),
            Vector256.Create(0x7E00u), Vector256.Create(0x7C00u));
        var denormal = (f.AsSingle() + Vector256.Create(DenormMagicBits).AsSingle()).AsUInt32() - Vector256.Create(DenormMagicBits);
        var mantissaOdd = (f >> 13) & Vector256<uint>.One;
        var normal = (f + Vector256.Create(NormalRebiasRound) + mantissaOdd) >> 13;
        var result = Vector256.ConditionalSelect(Vector256.LessThan(f.AsInt32(), Vector256.Create((int)HalfMinNormalBits)).AsUInt32(), denormal, normal);
        result = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(f.AsInt32(), Vector256.Create((int)HalfOverflowBits)).AsUInt32(), special, result);
        return result | (sign >> 16);
    }

    /// <summary>Four singles (bit patterns) to halves, each in the low 16 bits of its lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<uint> SingleToHalfBits(Vector128<uint> f)
    {
        var sign = f & Vector128.Create(SignMask);
        f ^= sign;
        var special = Vector128.ConditionalSelect(Vector128.GreaterThan(f.AsInt32(), Vector128.Create((int)SingleInfinityBits)).AsUInt32(),
            Vector128.Create(0x7E00u), Vector128.Create(0x7C00u));
        var denormal = (f.AsSingle() + Vector128.Create(DenormMagicBits).AsSingle()).AsUInt32() - Vector128.Create(DenormMagicBits);
        var mantissaOdd = (f >> 13) & Vector128<uint>.One;
        var normal = (f + Vector128.Create(NormalRebiasRound) + mantissaOdd) >> 13;
        var result = Vector128.ConditionalSelect(Vector128.LessThan(f.AsInt32(), Vector128.Create((int)HalfMinNormalBits)).AsUInt32(), denormal, normal);
        result = Vector128.ConditionalSelect(Vector128.GreaterThanOrEqual(f.AsInt32(), Vector128.Create((int)HalfOverflowBits)).AsUInt32(), special, result);
        return result | (sign >> 16);
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// f16 → f32 conversion. Scalars use a 65536-entry table (256 KiB, like ggml's) because scale
/// conversion sits inside every block of the dot loops; vectors use an exact bit-manipulation.
/// </summary>
internal static unsafe class HalfConversion
{
    /// <summary>Float value of every f16 bit pattern; lives for the process.</summary>
    public static readonly float* Table = BuildTable();

    private static float* BuildTable()
    {
        var t = (float*)NativeMemory.AlignedAlloc(65536 * sizeof(float), 64);
        for (int i = 0; i < 65536; i++) t[i] = (float)BitConverter.UInt16BitsToHalf((ushort)i);
        return t;
    }

    /// <summary>Float value of the f16 stored (unaligned) at <paramref name="p"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Load(byte* p) => Table[Unsafe.ReadUnaligned<ushort>(p)];

    /// <summary>
    /// f32 → f16 bits, rounding to nearest even, exactly as <c>(Half)value</c> (which costs a slow software routine: it made
    /// Q8_0 activation quantization, one conversion per 32 elements, five times slower than Q8_K's). Normal results: rebias the
    /// exponent and round the 13 dropped mantissa bits with +0xFFF plus the kept mantissa's lowest bit (a carry into the exponent,
    /// up to infinity, is the right result). Subnormal results: adding 0.5f lines the value up so that the FPU's own rounding
    /// leaves the f16 mantissa in the low bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FromSingle(float value)
    {
        uint f = BitConverter.SingleToUInt32Bits(value);
        uint sign = (f >> 16) & 0x8000u;
        f &= 0x7FFFFFFFu;
        uint h;
        if (f >= 0x47800000u) h = f > 0x7F800000u ? 0x7E00u : 0x7C00u;              // ≥ 65536, infinity or NaN
        else if (f < 0x38800000u) h = BitConverter.SingleToUInt32Bits(BitConverter.UInt32BitsToSingle(f) + 0.5f) - 0x3F000000u; // < 2⁻¹⁴
        else h = (f + 0xC8000FFFu + ((f >> 13) & 1u)) >> 13;                           // exponent − 112, round half to even
        return (ushort)(h | sign);
    }

    /// <summary>
    /// Converts f16 bit patterns held in the low 16 bits of each lane. Exponent and mantissa shift up by 13,
    /// then a multiply by 2^112 rebiases the exponent (15 → 127) exactly, denormals included; Inf/NaN get
    /// the all-ones exponent explicitly.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ToSingle(Vector256<uint> h)
    {
        var em = h & Vector256.Create(0x7fffu);
        var sign = (h & Vector256.Create(0x8000u)) << 16;
        var shifted = em << 13;
        var finite = shifted.AsSingle() * Vector256.Create(5.192296858534828e33f); // 2^112
        var special = (shifted | Vector256.Create(0x7f800000u)).AsSingle();
        var value = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(em, Vector256.Create(0x7c00u)).AsSingle(), special, finite);
        return (value.AsUInt32() | sign).AsSingle();
    }

    /// <summary>The constants of the 512-bit <see cref="ToSingle(Vector512{uint}, in Constants512)"/>, created once before a loop
    /// (the JIT does not hoist the broadcasts out of a loop by itself).</summary>
    public readonly struct Constants512
    {
        public readonly Vector512<uint> Magnitude = Vector512.Create(0x7fffu), Sign = Vector512.Create(0x8000u), Exponent = Vector512.Create(0x7f800000u), Infinity = Vector512.Create(0x7c00u);
        public readonly Vector512<float> Rebias = Vector512.Create(5.192296858534828e33f);

        public Constants512() { }
    }

    /// <inheritdoc cref="ToSingle(Vector256{uint})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingle(Vector512<uint> h, in Constants512 c)
    {
        var em = h & c.Magnitude;
        var sign = (h & c.Sign) << 16;
        var shifted = em << 13;
        var finite = shifted.AsSingle() * c.Rebias;
        var special = (shifted | c.Exponent).AsSingle();
        var value = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(em, c.Infinity).AsSingle(), special, finite);
        return (value.AsUInt32() | sign).AsSingle();
    }

    /// <inheritdoc cref="ToSingle(Vector256{uint})"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ToSingle(Vector512<uint> h)
    {
        var em = h & Vector512.Create(0x7fffu);
        var sign = (h & Vector512.Create(0x8000u)) << 16;
        var shifted = em << 13;
        var finite = shifted.AsSingle() * Vector512.Create(5.192296858534828e33f);
        var special = (shifted | Vector512.Create(0x7f800000u)).AsSingle();
        var value = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(em, Vector512.Create(0x7c00u)).AsSingle(), special, finite);
        return (value.AsUInt32() | sign).AsSingle();
    }
}

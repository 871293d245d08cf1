using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PluginEngine.Backends.Cpu.Kernels;

// Q8_0 and Q4_0 weights against Q8_0 activations. Both are 32-element blocks with one f16 scale;
// per block the kernel forms the exact int32 Σ qw·qa and adds float(dw·da) · that sum.
public static unsafe partial class QuantDot
{
    private const int Q8_0Bytes = 34, Q4_0Bytes = 18;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0Scalar(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        float s = 0;
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, x += Q8_0Bytes)
        {
            int sumi = 0;
            for (int i = 0; i < 32; i++) sumi += (sbyte)w[2 + i] * (sbyte)x[2 + i];
            s += HalfConversion.Load(w) * HalfConversion.Load(x) * sumi;
        }
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_0Scalar(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        float s = 0;
        for (long b = 0; b < n / 32; b++, w += Q4_0Bytes, x += Q8_0Bytes)
        {
            int sumi = 0;
            for (int j = 0; j < 16; j++)
            {
                int q = w[2 + j];
                sumi += ((q & 0xF) - 8) * (sbyte)x[2 + j] + ((q >> 4) - 8) * (sbyte)x[2 + 16 + j];
            }
            s += HalfConversion.Load(w) * HalfConversion.Load(x) * sumi;
        }
        return s;
    }

    /// <summary>Σ over 32 lanes of u·s as 8 int32 lanes (vpmaddubsw then vpmaddwd with ones).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> DotU8S8(Vector256<byte> u, Vector256<sbyte> s)
        => Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256<short>.One);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> DotU8S8(Vector512<byte> u, Vector512<sbyte> s)
        => Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u, s), Vector512<short>.One);

    /// <summary>One Q8_0 block: vpmaddubsw needs an unsigned operand, so |w| meets sign(w)·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q8_0Block256(byte* w, byte* x)
    {
        var qw = Vector256.Load((sbyte*)w + 2);
        var qx = Vector256.Load((sbyte*)x + 2);
        return DotU8S8(Avx2.Abs(qw), Avx2.Sign(qx, qw));
    }

    /// <summary>One Q4_0 block: nibbles 0..15 (low nibbles are elements 0..15, high 16..31); Σ(q-8)·x = Σq·x − Σ8·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q4_0Block256(byte* w, byte* x)
    {
        var packed = Vector128.Load(w + 2);
        var q = Vector256.Create(packed & Vector128.Create((byte)0xF), Vector128.ShiftRightLogical(packed, 4));
        var qx = Vector256.Load((sbyte*)x + 2);
        var p = Avx2.MultiplyAddAdjacent(q, qx) - Avx2.MultiplyAddAdjacent(Vector256.Create((byte)8), qx);
        return Avx2.MultiplyAddAdjacent(p, Vector256<short>.One);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0Avx2(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        Vector256<float> acc = default;
        for (long b = 0; b < n / 32; b++, w += Q8_0Bytes, x += Q8_0Bytes)
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q8_0Block256(w, x)), Vector256.Create(HalfConversion.Load(w) * HalfConversion.Load(x)), acc);
        return Vector256.Sum(acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_0Avx2(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        Vector256<float> acc = default;
        for (long b = 0; b < n / 32; b++, w += Q4_0Bytes, x += Q8_0Bytes)
            acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Q4_0Block256(w, x)), Vector256.Create(HalfConversion.Load(w) * HalfConversion.Load(x)), acc);
        return Vector256.Sum(acc);
    }

    /// <summary>Two blocks per 512-bit register; an odd last block goes through the 256-bit form.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q8_0Avx512(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        long blocks = n / 32, b = 0;
        Vector512<float> acc = default;
        for (; b + 2 <= blocks; b += 2, w += 2 * Q8_0Bytes, x += 2 * Q8_0Bytes)
        {
            var qw = Vector512.Create(Vector256.Load((sbyte*)w + 2), Vector256.Load((sbyte*)w + Q8_0Bytes + 2));
            var qx = Vector512.Create(Vector256.Load((sbyte*)x + 2), Vector256.Load((sbyte*)x + Q8_0Bytes + 2));
            // |w| and x with w's sign; activations are clamped to ±127 so negating never overflows.
            var sx = Vector512.ConditionalSelect(Vector512.LessThan(qw, Vector512<sbyte>.Zero), Vector512<sbyte>.Zero - qx, qx);
            var sumi = DotU8S8(Vector512.Abs(qw).AsByte(), sx);
            var scale = Vector512.Create(Vector256.Create(HalfConversion.Load(w) * HalfConversion.Load(x)),
                                         Vector256.Create(HalfConversion.Load(w + Q8_0Bytes) * HalfConversion.Load(x + Q8_0Bytes)));
            acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sumi), scale, acc);
        }
        float s = Vector512.Sum(acc);
        if (b < blocks) s += HalfConversion.Load(w) * HalfConversion.Load(x) * Vector256.Sum(Q8_0Block256(w, x));
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_0Avx512(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        long blocks = n / 32, b = 0;
        Vector512<float> acc = default;
        var lowMask = Vector128.Create((byte)0xF);
        for (; b + 2 <= blocks; b += 2, w += 2 * Q4_0Bytes, x += 2 * Q8_0Bytes)
        {
            var p0 = Vector128.Load(w + 2);
            var p1 = Vector128.Load(w + Q4_0Bytes + 2);
            var q = Vector512.Create(Vector256.Create(p0 & lowMask, Vector128.ShiftRightLogical(p0, 4)),
                                     Vector256.Create(p1 & lowMask, Vector128.ShiftRightLogical(p1, 4)));
            var qx = Vector512.Create(Vector256.Load((sbyte*)x + 2), Vector256.Load((sbyte*)x + Q8_0Bytes + 2));
            var p = Avx512BW.MultiplyAddAdjacent(q, qx) - Avx512BW.MultiplyAddAdjacent(Vector512.Create((byte)8), qx);
            var sumi = Avx512BW.MultiplyAddAdjacent(p, Vector512<short>.One);
            var scale = Vector512.Create(Vector256.Create(HalfConversion.Load(w) * HalfConversion.Load(x)),
                                         Vector256.Create(HalfConversion.Load(w + Q4_0Bytes) * HalfConversion.Load(x + Q8_0Bytes)));
            acc = Avx512F.FusedMultiplyAdd(Avx512F.ConvertToVector512Single(sumi), scale, acc);
        }
        float s = Vector512.Sum(acc);
        if (b < blocks) s += HalfConversion.Load(w) * HalfConversion.Load(x) * Vector256.Sum(Q4_0Block256(w, x));
        return s;
    }
}

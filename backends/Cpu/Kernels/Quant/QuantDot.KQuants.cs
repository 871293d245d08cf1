using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace PluginEngine.Backends.Cpu.Kernels;

// K-quant weights (256-element super-blocks) against Q8_K activations (f32 d, 256 int8, 16 int16 sums of 16).
// Q4_K/Q5_K: value = d·sc_j·q − dmin·m_j, so Σ w·x = dx·(d·Σ_j sc_j·Σ q·qx − dmin·Σ_j m_j·Σ qx), where Σ qx per
// 32-element sub-block comes from the activation's precomputed sums. Q6_K: value = d·sc_i·(q − 32), and
// Σ(q − 32)·qx = Σ q·qx − 32·Σ qx, again with Σ qx from the sums. The unsigned q feed vpmaddubsw directly.
// Float part (the canonical order of QuantDot.Lanes.cs), per super-block in order: Q4_K/Q5_K
// acc = fma(float(Σ_j sc_j·Σ q·qx), d·dx, acc), then acc = fma(−float(Σ_j m_j·Σ qx), dmin·dx, acc); Q6_K one
// acc = fma(float(Σ_i sc_i·Σ q·qx − 32·Σ_i sc_i·Σ qx), d·dx, acc). The integer sums are exact (int32 holds them; a sum past
// 2^24 rounds in the conversion, the same way in every kernel).
public static unsafe partial class QuantDot
{
    private const int Q4_KBytes = 144, Q5_KBytes = 176, Q6_KBytes = 210, Q8_KBytes = 292;
    private const int Q8KQs = 4, Q8KSums = 260;

    /// <summary>Unpacks Q4_K/Q5_K's 12 scale bytes into 8 scales (out[0..7]) and 8 mins (out[8..15]), 6 bits each.</summary>
    internal static void UnpackScaleMinsBytes(byte* s, byte* outp) => UnpackScaleMins(s, outp);

    /// <inheritdoc cref="UnpackScaleMinsBytes"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UnpackScaleMins(byte* s, byte* outp)
    {
        for (int j = 0; j < 4; j++)
        {
            outp[j] = (byte)(s[j] & 63);
            outp[8 + j] = (byte)(s[j + 4] & 63);
            outp[4 + j] = (byte)((s[j + 8] & 0xF) | ((s[j] >> 6) << 4));
            outp[12 + j] = (byte)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
        }
    }

    /// <summary>
    /// The same unpacking with 32-bit bit operations: returns the eight 6-bit scales as the bytes of
    /// <paramref name="scales"/> and the eight mins as the bytes of <paramref name="mins"/> (sub-block j in byte j).
    /// Word 0 holds scales 0..3 (low 6 bits) and the top bits of scales 4..7; word 1 the same for mins;
    /// word 2 the low nibbles of scales 4..7 and, in its high nibbles, of mins 4..7.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UnpackScaleMins(byte* s, out ulong scales, out ulong mins)
    {
        const uint low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
        uint w0 = Unsafe.ReadUnaligned<uint>(s), w1 = Unsafe.ReadUnaligned<uint>(s + 4), w2 = Unsafe.ReadUnaligned<uint>(s + 8);
        uint scLo = w0 & low6, scHi = (w2 & low4) | (((w0 >> 6) & low2) << 4);
        uint mLo = w1 & low6, mHi = ((w2 >> 4) & low4) | (((w1 >> 6) & low2) << 4);
        scales = scLo | ((ulong)scHi << 32);
        mins = mLo | ((ulong)mHi << 32);
    }

    /// <summary>Per 32-element sub-block j: mins[j] · (sum of its activation quants), as 8 int32 lanes
    /// (the activation's sums of 16 are added in pairs by vpmaddwd).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> MinProducts(ulong mins, byte* x)
    {
        var pairSums = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + Q8KSums)), Vector256<short>.One);
        return pairSums * Avx2.ConvertToVector256Int32(Vector128.CreateScalar(mins).AsByte());
    }

    /// <summary>Σ_j mins[j] · (sum of activation quants in 32-element sub-block j).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int MinCorrection(byte* mins, byte* x)
    {
        short* bs = (short*)(x + Q8KSums);
        int sum = 0;
        for (int j = 0; j < 8; j++) sum += mins[j] * (bs[2 * j] + bs[2 * j + 1]);
        return sum;
    }

    // ---------------------------------------------------------------- scalar

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_KScalar(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        byte* sm = stackalloc byte[16];
        float s = 0;
        for (long b = 0; b < n / 256; b++, w += Q4_KBytes, x += Q8_KBytes)
        {
            float dx = Unsafe.ReadUnaligned<float>(x);
            UnpackScaleMins(w + 4, sm);
            sbyte* q8 = (sbyte*)x + Q8KQs;
            int sumi = 0;
            for (int c = 0; c < 4; c++)
            {
                byte* qs = w + 16 + 32 * c;
                int s0 = 0, s1 = 0;
                for (int l = 0; l < 32; l++)
                {
                    s0 += (qs[l] & 0xF) * q8[64 * c + l];
                    s1 += (qs[l] >> 4) * q8[64 * c + 32 + l];
                }
                sumi += sm[2 * c] * s0 + sm[2 * c + 1] * s1;
            }
            s = MathF.FusedMultiplyAdd(sumi, HalfConversion.Load(w) * dx, s);
            s = MathF.FusedMultiplyAdd(-(float)MinCorrection(sm + 8, x), HalfConversion.Load(w + 2) * dx, s);
        }
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q5_KScalar(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        byte* sm = stackalloc byte[16];
        float s = 0;
        for (long b = 0; b < n / 256; b++, w += Q5_KBytes, x += Q8_KBytes)
        {
            float dx = Unsafe.ReadUnaligned<float>(x);
            UnpackScaleMins(w + 4, sm);
            sbyte* q8 = (sbyte*)x + Q8KQs;
            byte* qh = w + 16;
            int sumi = 0;
            for (int c = 0; c < 4; c++)
            {
                byte* qs = w + 48 + 32 * c;
                int s0 = 0, s1 = 0;
                for (int l = 0; l < 32; l++)
                {
                    int lo = (qs[l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4);
                    int hi = (qs[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
                    s0 += lo * q8[64 * c + l];
                    s1 += hi * q8[64 * c + 32 + l];
                }
                sumi += sm[2 * c] * s0 + sm[2 * c + 1] * s1;
            }
            s = MathF.FusedMultiplyAdd(sumi, HalfConversion.Load(w) * dx, s);
            s = MathF.FusedMultiplyAdd(-(float)MinCorrection(sm + 8, x), HalfConversion.Load(w + 2) * dx, s);
        }
        return s;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q6_KScalar(byte* w, void* a, long n)
    {
        byte* x = (byte*)a;
        int* sub = stackalloc int[16];
        float s = 0;
        for (long b = 0; b < n / 256; b++, w += Q6_KBytes, x += Q8_KBytes)
        {
            sbyte* q8 = (sbyte*)x + Q8KQs;
            sbyte* sc = (sbyte*)w + 192;
            new Span<int>(sub, 16).Clear();
            for (int h = 0; h < 2; h++)
            {
                byte* ql = w + 64 * h;
                byte* qh = w + 128 + 32 * h;
                for (int l = 0; l < 32; l++)
                {
                    int e = 128 * h + l;
                    sub[e / 16] += (((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32) * q8[e];
                    sub[(e + 32) / 16] += (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32) * q8[e + 32];
                    sub[(e + 64) / 16] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * q8[e + 64];
                    sub[(e + 96) / 16] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * q8[e + 96];
                }
            }
            int sumi = 0;
            for (int i = 0; i < 16; i++) sumi += sc[i] * sub[i];
            s = MathF.FusedMultiplyAdd(sumi, HalfConversion.Load(w + 208) * Unsafe.ReadUnaligned<float>(x), s);
        }
        return s;
    }

    // ---------------------------------------------------------------- AVX2

    /// <summary>Σ over 32 lanes of u·s, each 16-lane pair-sum weighted by a 16-bit scale, as 8 int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> ScaledDot(Vector256<byte> u, Vector256<sbyte> s, Vector256<short> scale)
        => Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), scale);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> ScaledDot(Vector512<byte> u, Vector512<sbyte> s, Vector512<short> scale)
        => Avx512BW.MultiplyAddAdjacent(Avx512BW.MultiplyAddAdjacent(u, s), scale);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_KAvx2(byte* w, void* a, long n) => Q4_KRowAvx2(w, (byte*)a, n / 256, null, prefetch: false);

    /// <summary>
    /// One Q4_K row against a Q8_K activation row (<paramref name="blocks"/> super-blocks); with <paramref name="prefetch"/>,
    /// also prefetches the same number of bytes from <paramref name="ahead"/> on, one super-block's worth per super-block (the
    /// four-row kernel passes the row four rows further on). Shared by the single-row and four-row kernels, so both give the
    /// same bits. Per super-block: the 6-bit scales are unpacked in general registers, zero-extended to words in both 128-bit
    /// halves, doubled into dwords (s_k, s_k) and each broadcast by vpshufd with an immediate (no index constants: the loop
    /// keeps every value in registers); the min correction is one vpmaddwd of the activation's sums of 16 against the mins
    /// repeated for their two sums. Both integer vectors are reduced to scalars for the two canonical FMAs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q4_KRowAvx2(byte* w, byte* x, long blocks, byte* ahead, bool prefetch)
    {
        var m4 = Vector256.Create((byte)0xF);
        Vector128<float> acc = default;
        for (long b = 0; b < blocks; b++, w += Q4_KBytes, x += Q8_KBytes, ahead += Q4_KBytes)
        {
            if (prefetch)
            {
                Sse.Prefetch0(ahead);
                Sse.Prefetch0(ahead + 64);
                Sse.Prefetch0(ahead + 128);
            }
            float dx = Unsafe.ReadUnaligned<float>(x);
            UnpackScaleMins(w + 4, out ulong scales, out ulong mins);
            var sc = Avx2.UnpackLow(Avx2.BroadcastScalarToVector256(Vector128.CreateScalar(scales)).AsByte(), Vector256<byte>.Zero).AsInt16();
            var s03 = Avx2.UnpackLow(sc, sc).AsInt32();  // (s0,s0) (s1,s1) (s2,s2) (s3,s3) in each half
            var s47 = Avx2.UnpackHigh(sc, sc).AsInt32(); // (s4,s4) … (s7,s7)
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var q = Vector256.Load(w + 16);
            var sum01 = ScaledDot(q & m4, Vector256.Load(q8), Avx2.Shuffle(s03, 0x00).AsInt16())
                      + ScaledDot(Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & m4, Vector256.Load(q8 + 32), Avx2.Shuffle(s03, 0x55).AsInt16());
            q = Vector256.Load(w + 48);
            var sum23 = ScaledDot(q & m4, Vector256.Load(q8 + 64), Avx2.Shuffle(s03, 0xAA).AsInt16())
                      + ScaledDot(Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & m4, Vector256.Load(q8 + 96), Avx2.Shuffle(s03, 0xFF).AsInt16());
            q = Vector256.Load(w + 80);
            var sum45 = ScaledDot(q & m4, Vector256.Load(q8 + 128), Avx2.Shuffle(s47, 0x00).AsInt16())
                      + ScaledDot(Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & m4, Vector256.Load(q8 + 160), Avx2.Shuffle(s47, 0x55).AsInt16());
            q = Vector256.Load(w + 112);
            var sum67 = ScaledDot(q & m4, Vector256.Load(q8 + 192), Avx2.Shuffle(s47, 0xAA).AsInt16())
                      + ScaledDot(Avx2.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & m4, Vector256.Load(q8 + 224), Avx2.Shuffle(s47, 0xFF).AsInt16());
            var sumi = (sum01 + sum23) + (sum45 + sum67);
            var m = Vector128.CreateScalar(mins).AsByte();
            var minProducts = Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + Q8KSums)), Avx2.ConvertToVector256Int16(Sse2.UnpackLow(m, m)));
            acc = KQuantStep(Sum2(sumi, minProducts), HalfConversion.Load(w) * dx, HalfConversion.Load(w + 2) * dx, acc);
        }
        return acc.ToScalar();
    }

    /// <summary>The canonical Q4_K/Q5_K super-block step for one row and token (lane 0 of acc): <paramref name="sums"/> holds
    /// [Σ scaled, Σ mins]; acc = fma(float(Σ scaled), scale, acc), then acc = fma(−float(Σ mins), minScale, acc).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> KQuantStep(Vector128<int> sums, float scale, float minScale, Vector128<float> acc)
    {
        var f = Sse2.ConvertToVector128Single(sums);
        acc = Fma.MultiplyAddScalar(f, Vector128.CreateScalarUnsafe(scale), acc);
        return Fma.MultiplyAddNegatedScalar(Sse3.MoveHighAndDuplicate(f), Vector128.CreateScalarUnsafe(minScale), acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q5_KAvx2(byte* w, void* a, long n) => Q5_KRowAvx2(w, (byte*)a, n / 256, null, prefetch: false);

    /// <summary>One Q5_K row, shared by the single-row and four-row kernels; with <paramref name="prefetch"/>, also prefetches
    /// from <paramref name="ahead"/> on, one super-block's worth per super-block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q5_KRowAvx2(byte* w, byte* x, long blocks, byte* ahead, bool prefetch)
    {
        var m4 = Vector256.Create((byte)0xF);
        var bit4 = Vector256.Create((byte)0x10);
        Vector128<float> acc = default;
        for (long b = 0; b < blocks; b++, w += Q5_KBytes, x += Q8_KBytes, ahead += Q5_KBytes)
        {
            if (prefetch)
            {
                Sse.Prefetch0(ahead);
                Sse.Prefetch0(ahead + 64);
                Sse.Prefetch0(ahead + 128);
            }
            float dx = Unsafe.ReadUnaligned<float>(x);
            UnpackScaleMins(w + 4, out ulong scales, out ulong mins);
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var qh = Vector256.Load(w + 16);
            Vector256<int> sumi = default;
            for (int c = 0; c < 4; c++)
            {
                var q = Vector256.Load(w + 48 + 32 * c);
                var mLo = Vector256.Create((byte)(1 << (2 * c)));
                var mHi = Vector256.Create((byte)(2 << (2 * c)));
                var lo = (q & m4) | (Vector256.Equals(qh & mLo, mLo) & bit4);
                var hi = Vector256.ShiftRightLogical(q, 4) | (Vector256.Equals(qh & mHi, mHi) & bit4);
                sumi += ScaledDot(lo, Vector256.Load(q8 + 64 * c), Vector256.Create((short)(byte)(scales >> (16 * c))));
                sumi += ScaledDot(hi, Vector256.Load(q8 + 64 * c + 32), Vector256.Create((short)(byte)(scales >> (16 * c + 8))));
            }
            acc = KQuantStep(Sum2(sumi, MinProducts(mins, x)), HalfConversion.Load(w) * dx, HalfConversion.Load(w + 2) * dx, acc);
        }
        return acc.ToScalar();
    }

    /// <summary>Per pair of 16-element sub-blocks: Σ sc_i · (sum of activation quants in sub-block i), as 8 int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6OffsetProducts(Vector256<short> scales16, byte* x)
        => Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + Q8KSums)), scales16);

    /// <summary>The four 32-element groups of one Q6_K half as unsigned 6-bit values (see the Dequantizer for the layout).
    /// Shifts are 16-bit (AVX2 has no byte shifts; a byte-vector shift costs a shift and a mask): every shifted value is masked
    /// to the bits it contributes (0x0F for the low four, 0x30 for the top two), which also drops what crossed a byte boundary.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Q6Half(byte* w, int h, out Vector256<byte> q0, out Vector256<byte> q1, out Vector256<byte> q2, out Vector256<byte> q3)
    {
        var m4 = Vector256.Create((byte)0xF);
        var m30 = Vector256.Create((byte)0x30);
        var ql0 = Vector256.Load(w + 64 * h);
        var ql1 = Vector256.Load(w + 64 * h + 32);
        var hb = Vector256.Load(w + 128 + 32 * h);
        q0 = (ql0 & m4) | (Avx2.ShiftLeftLogical(hb.AsUInt16(), 4).AsByte() & m30);
        q1 = (ql1 & m4) | (Avx2.ShiftLeftLogical(hb.AsUInt16(), 2).AsByte() & m30);
        q2 = (Avx2.ShiftRightLogical(ql0.AsUInt16(), 4).AsByte() & m4) | (hb & m30);
        q3 = (Avx2.ShiftRightLogical(ql1.AsUInt16(), 4).AsByte() & m4) | (Avx2.ShiftRightLogical(hb.AsUInt16(), 2).AsByte() & m30);
    }

    /// <summary>vpshufb indices putting 16-bit lane 2g of a 128-bit half in every lane of the low half and lane 2g+1 in the high half.</summary>
    private static Vector256<byte> Q6ScalePairIndex(int g)
    {
        byte a = (byte)(4 * g), b = (byte)(4 * g + 1), c = (byte)(4 * g + 2), d = (byte)(4 * g + 3);
        return Vector256.Create(a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b, c, d, c, d, c, d, c, d, c, d, c, d, c, d, c, d);
    }

    private static readonly Vector256<byte> Q6Pair0 = Q6ScalePairIndex(0), Q6Pair1 = Q6ScalePairIndex(1), Q6Pair2 = Q6ScalePairIndex(2), Q6Pair3 = Q6ScalePairIndex(3);

    /// <summary>Half <paramref name="h"/> of a Q6_K super-block (four 32-element groups) against its 128 activation quants.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6HalfDot(byte* w, int h, Vector256<byte> halfScales, sbyte* y)
    {
        Q6Half(w, h, out var q0, out var q1, out var q2, out var q3);
        return ScaledDot(q0, Vector256.Load(y), Avx2.Shuffle(halfScales, Q6Pair0).AsInt16())
             + ScaledDot(q1, Vector256.Load(y + 32), Avx2.Shuffle(halfScales, Q6Pair1).AsInt16())
             + ScaledDot(q2, Vector256.Load(y + 64), Avx2.Shuffle(halfScales, Q6Pair2).AsInt16())
             + ScaledDot(q3, Vector256.Load(y + 96), Avx2.Shuffle(halfScales, Q6Pair3).AsInt16());
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q6_KAvx2(byte* w, void* a, long n) => Q6_KRowAvx2(w, (byte*)a, n / 256, null, prefetch: false);

    /// <summary>One Q6_K row against a Q8_K activation row, shared by the single-row and four-row kernels (same bits); with
    /// <paramref name="prefetch"/>, also prefetches from <paramref name="ahead"/> on, one super-block's worth per super-block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q6_KRowAvx2(byte* w, byte* x, long blocks, byte* ahead, bool prefetch)
    {
        Vector128<float> acc = default;
        for (long b = 0; b < blocks; b++, w += Q6_KBytes, x += Q8_KBytes, ahead += Q6_KBytes)
        {
            if (prefetch)
            {
                Sse.Prefetch0(ahead);
                Sse.Prefetch0(ahead + 64);
                Sse.Prefetch0(ahead + 128);
                Sse.Prefetch0(ahead + 192);
            }
            float d = HalfConversion.Load(w + 208) * Unsafe.ReadUnaligned<float>(x);
            sbyte* q8 = (sbyte*)x + Q8KQs;
            // The 16 scales widened once; each group's pair (2g for its first 16 elements, 2g+1 for the next) is broadcast by vpshufb.
            var sc16 = Avx2.ConvertToVector256Int16((sbyte*)w + 192);
            var sumi = Q6HalfDot(w, 0, Avx2.Permute4x64(sc16.AsInt64(), 0x44).AsByte(), q8)
                     + Q6HalfDot(w, 1, Avx2.Permute4x64(sc16.AsInt64(), 0xEE).AsByte(), q8 + 128);
            sumi -= Avx2.ShiftLeftLogical(Q6OffsetProducts(sc16, x), 5);
            acc = ScalarStep(Sum1(sumi), d, acc);
        }
        return acc.ToScalar();
    }

    // ---------------------------------------------------------------- AVX-512 (one 64-element chunk per register)

    /// <summary>vpermw indices spreading 16-bit lanes 2c and 2c+1 over the low and high 16 lanes (chunk c of a K-quant super-block).</summary>
    private static Vector512<short> ChunkScaleIndex(int c)
        => Vector512.Create(Vector256.Create((short)(2 * c)), Vector256.Create((short)(2 * c + 1)));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q4_KAvx512(byte* w, void* a, long n) => Q4_KRowAvx512(w, (byte*)a, n / 256);

    /// <summary>One Q4_K row with 512-bit integer sums, reduced to scalars for the canonical FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q4_KRowAvx512(byte* w, byte* x, long blocks)
    {
        var m4 = Vector256.Create((byte)0xF);
        Vector512<short> i0 = ChunkScaleIndex(0), i1 = ChunkScaleIndex(1), i2 = ChunkScaleIndex(2), i3 = ChunkScaleIndex(3);
        Vector128<float> acc = default;
        for (long b = 0; b < blocks; b++, w += Q4_KBytes, x += Q8_KBytes)
        {
            float dx = Unsafe.ReadUnaligned<float>(x);
            UnpackScaleMins(w + 4, out ulong scales, out ulong mins);
            var sc16 = Avx2.ConvertToVector256Int16(Vector128.CreateScalar(scales).AsByte()).ToVector512Unsafe();
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var q = Vector256.Load(w + 16);
            var sumi = ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)), Vector512.Load(q8), Avx512BW.PermuteVar32x16(sc16, i0));
            q = Vector256.Load(w + 48);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)), Vector512.Load(q8 + 64), Avx512BW.PermuteVar32x16(sc16, i1));
            q = Vector256.Load(w + 80);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)), Vector512.Load(q8 + 128), Avx512BW.PermuteVar32x16(sc16, i2));
            q = Vector256.Load(w + 112);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)), Vector512.Load(q8 + 192), Avx512BW.PermuteVar32x16(sc16, i3));
            acc = KQuantStep(Sum2(sumi.GetLower() + sumi.GetUpper(), MinProducts(mins, x)), HalfConversion.Load(w) * dx, HalfConversion.Load(w + 2) * dx, acc);
        }
        return acc.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q5_KAvx512(byte* w, void* a, long n) => Q5_KRowAvx512(w, (byte*)a, n / 256);

    /// <summary>One Q5_K row with 512-bit integer sums, as <see cref="Q4_KRowAvx512"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q5_KRowAvx512(byte* w, byte* x, long blocks)
    {
        var m4 = Vector256.Create((byte)0xF);
        var bit4 = Vector512.Create((byte)0x10);
        Vector512<short> i0 = ChunkScaleIndex(0), i1 = ChunkScaleIndex(1), i2 = ChunkScaleIndex(2), i3 = ChunkScaleIndex(3);
        // Fifth-bit masks per chunk: the low 32 lanes take bit 2c of qh, the high 32 lanes bit 2c+1.
        Vector512<byte> h0 = Vector512.Create(Vector256.Create((byte)1), Vector256.Create((byte)2));
        Vector128<float> acc = default;
        for (long b = 0; b < blocks; b++, w += Q5_KBytes, x += Q8_KBytes)
        {
            float dx = Unsafe.ReadUnaligned<float>(x);
            UnpackScaleMins(w + 4, out ulong scales, out ulong mins);
            var sc16 = Avx2.ConvertToVector256Int16(Vector128.CreateScalar(scales).AsByte()).ToVector512Unsafe();
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var qh256 = Vector256.Load(w + 16);
            var qh = Join(qh256, qh256);
            var mask = h0;
            var q = Vector256.Load(w + 48);
            var sumi = ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)) | (Vector512.Equals(qh & mask, mask) & bit4), Vector512.Load(q8), Avx512BW.PermuteVar32x16(sc16, i0));
            mask = Vector512.ShiftLeft(mask, 2);
            q = Vector256.Load(w + 80);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)) | (Vector512.Equals(qh & mask, mask) & bit4), Vector512.Load(q8 + 64), Avx512BW.PermuteVar32x16(sc16, i1));
            mask = Vector512.ShiftLeft(mask, 2);
            q = Vector256.Load(w + 112);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)) | (Vector512.Equals(qh & mask, mask) & bit4), Vector512.Load(q8 + 128), Avx512BW.PermuteVar32x16(sc16, i2));
            mask = Vector512.ShiftLeft(mask, 2);
            q = Vector256.Load(w + 144);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)) | (Vector512.Equals(qh & mask, mask) & bit4), Vector512.Load(q8 + 192), Avx512BW.PermuteVar32x16(sc16, i3));
            acc = KQuantStep(Sum2(sumi.GetLower() + sumi.GetUpper(), MinProducts(mins, x)), HalfConversion.Load(w) * dx, HalfConversion.Load(w + 2) * dx, acc);
        }
        return acc.ToScalar();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float Q6_KAvx512(byte* w, void* a, long n) => Q6_KRowAvx512(w, (byte*)a, n / 256);

    /// <summary>One Q6_K row with 512-bit integer sums, as <see cref="Q4_KRowAvx512"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Q6_KRowAvx512(byte* w, byte* x, long blocks)
    {
        Vector128<float> acc = default;
        // vpermw indices that spread scales 4m..4m+3 over four 8-lane groups (one 16-element sub-block each).
        var spread = Vector512.Create((short)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        var four = Vector512.Create((short)4);
        for (long b = 0; b < blocks; b++, w += Q6_KBytes, x += Q8_KBytes)
        {
            float d = HalfConversion.Load(w + 208) * Unsafe.ReadUnaligned<float>(x);
            sbyte* q8 = (sbyte*)x + Q8KQs;
            sbyte* sc = (sbyte*)w + 192;
            var scales16 = Avx2.ConvertToVector256Int16(sc).ToVector512Unsafe();
            var idx = spread;
            Vector512<int> sumi = default;
            for (int h = 0; h < 2; h++)
            {
                Q6Half(w, h, out var q0, out var q1, out var q2, out var q3);
                sbyte* y = q8 + 128 * h;
                sumi += ScaledDot(Join(q0, q1), Vector512.Load(y), Avx512BW.PermuteVar32x16(scales16, idx));
                idx += four;
                sumi += ScaledDot(Join(q2, q3), Vector512.Load(y + 64), Avx512BW.PermuteVar32x16(scales16, idx));
                idx += four;
            }
            var total = sumi.GetLower() + sumi.GetUpper() - Avx2.ShiftLeftLogical(Q6OffsetProducts(scales16.GetLower(), x), 5);
            acc = ScalarStep(Sum1(total), d, acc);
        }
        return acc.ToScalar();
    }
}

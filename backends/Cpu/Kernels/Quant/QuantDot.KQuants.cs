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

    /// <summary>The eight mins, each repeated for the two activation sums of 16 of its sub-block, as int16 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> MinPairs(ulong mins)
    {
        var m = Vector128.CreateScalar(mins).AsByte();
        return Avx2.ConvertToVector256Int16(Sse2.UnpackLow(m, m));
    }

    /// <summary>Per 32-element sub-block j: mins[j] · (sum of its activation quants), as 8 int32 lanes (one vpmaddwd of the
    /// activation's sums of 16 against <see cref="MinPairs"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> MinProducts(Vector256<short> minPairs, byte* x)
        => Avx2.MultiplyAddAdjacent(Vector256.Load((short*)(x + Q8KSums)), minPairs);

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

    /// <summary>The canonical Q4_K/Q5_K super-block step for one row and token (lane 0 of acc): <paramref name="sums"/> holds
    /// [Σ scaled, Σ mins]; acc = fma(float(Σ scaled), scale, acc), then acc = fma(−float(Σ mins), minScale, acc).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> KQuantStep(Vector128<int> sums, float scale, float minScale, Vector128<float> acc)
    {
        var f = Sse2.ConvertToVector128Single(sums);
        acc = Fma.MultiplyAddScalar(f, Vector128.CreateScalarUnsafe(scale), acc);
        return Fma.MultiplyAddNegatedScalar(Sse3.MoveHighAndDuplicate(f), Vector128.CreateScalarUnsafe(minScale), acc);
    }

    /// <summary>
    /// The integer part of one K-quant super-block of one row against one token's Q8_K block, at one ISA level: the kernels
    /// below (<see cref="KRow{T}"/>, <see cref="KRows4{T}"/>) are written once over it and specialized per type and level.
    /// An instance holds the level's constant vectors, created once per call of a kernel (<see cref="Create"/>) and kept in
    /// registers by its loops (created inside <see cref="Sums"/> they were rebuilt for every super-block).
    /// </summary>
    private interface IKSuperBlock<TSelf> where TSelf : struct, IKSuperBlock<TSelf>
    {
        /// <summary>An instance with the constants.</summary>
        static abstract TSelf Create();

        /// <summary>Bytes of one weight super-block.</summary>
        static abstract int Bytes { get; }

        /// <summary>Q4_K/Q5_K (scale and min terms, d at byte 0 and dmin at byte 2) or Q6_K (one term, d at byte 208).</summary>
        static abstract bool HasMins { get; }

        /// <summary>Whether the four-row kernel prefetches the row four rows on while it reads a row (the AVX2 level's choice,
        /// measured on an AVX2 EPYC); otherwise (the AVX-512 level) it prefetches <see cref="StreamPrefetchBytes"/> ahead in
        /// its sequential stream.</summary>
        static abstract bool Prefetch { get; }

        /// <summary>The exact scaled sums as 8 int32 lanes (to be added up): Σ_j sc_j·Σ q·qx, or Q6_K's whole
        /// Σ sc·Σ q·qx − 32·Σ sc·Σ qx; and, for Q4_K/Q5_K, the eight 6-bit mins as the bytes of <paramref name="mins"/>.</summary>
        Vector256<int> Sums(byte* w, byte* x, out ulong mins);
    }

    /// <summary>The canonical float step of super-block <c>w</c> for one row and token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> KStep<T>(in T k, byte* w, byte* x, Vector128<float> acc) where T : struct, IKSuperBlock<T>
    {
        var sums = k.Sums(w, x, out ulong mins);
        float dx = Unsafe.ReadUnaligned<float>(x);
        return T.HasMins
            ? KQuantStep(Sum2(sums, MinProducts(MinPairs(mins), x)), HalfConversion.Load(w) * dx, HalfConversion.Load(w + 2) * dx, acc)
            : ScalarStep(Sum1(sums), HalfConversion.Load(w + 208) * dx, acc);
    }

    /// <summary>One row against one token: per super-block the integer sums reduced to scalars and the canonical FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float KRow<T>(byte* w, void* a, long n) where T : struct, IKSuperBlock<T>
    {
        byte* x = (byte*)a;
        var k = T.Create();
        Vector128<float> acc = default;
        for (long b = 0; b < n / 256; b++, w += T.Bytes, x += Q8_KBytes) acc = KStep(k, w, x, acc);
        return acc.ToScalar();
    }

    /// <summary>Super-blocks per pass of <see cref="KRows4{T}"/>: their integer sums wait on the stack (8 KiB).</summary>
    private const int KPass = 32;

    /// <summary>
    /// Four rows against one token. Each row is read on its own, one after another (one sequential stream: four rows
    /// interleaved super-block by super-block ran 10–25% slower on a matrix larger than the caches), its super-blocks' integer
    /// sums stored on the stack; then the float part runs for the four rows at once with lanes over rows (as
    /// <see cref="Q4_0Avx2R4"/>), which makes a row's horizontal sums and FMAs a quarter of the single-row kernel's (they had
    /// made it 10–15% slower than before the canonical order). Long rows go in passes of <see cref="KPass"/> super-blocks.
    /// Per row the arithmetic is <see cref="KRow{T}"/>'s.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    private static void KRows4<T>(byte* w, long rowBytes, byte* x, long n, float* y) where T : struct, IKSuperBlock<T>
    {
        var kernel = T.Create();
        var sums = stackalloc Vector256<int>[KPass * 4]; // per super-block: the four rows' scaled sums
        var scales = stackalloc float[KPass * 8];        // per super-block: the four rows' d, then their dmin
        var minBytes = stackalloc ulong[KPass * 4];      // per super-block: the four rows' mins
        int bytes = T.Bytes, scaleAt = T.HasMins ? 0 : 208;
        Vector128<float> acc = default;
        long blocks = n / 256;
        for (long b0 = 0; b0 < blocks; b0 += KPass)
        {
            long count = Math.Min(KPass, blocks - b0);
            for (int r = 0; r < 4; r++)
            {
                byte* wr = w + r * rowBytes + b0 * bytes, xr = x + b0 * Q8_KBytes, ahead = wr + 4 * rowBytes;
                for (long k = 0; k < count; k++, wr += bytes, xr += Q8_KBytes, ahead += bytes)
                {
                    if (T.Prefetch) PrefetchSpan(ahead, bytes);
                    else PrefetchSpan(wr + StreamPrefetchBytes, bytes);
                    sums[4 * k + r] = kernel.Sums(wr, xr, out minBytes[4 * k + r]);
                    // The row scales are gathered here, with scalar loads and stores, rather than inserted into vectors below:
                    // the vector units are the busy ones.
                    scales[8 * k + r] = HalfConversion.Load(wr + scaleAt);
                    if (T.HasMins) scales[8 * k + 4 + r] = HalfConversion.Load(wr + 2);
                }
            }
            byte* xb = x + b0 * Q8_KBytes;
            for (long k = 0; k < count; k++, xb += Q8_KBytes)
            {
                Vector256<int>* s = sums + 4 * k;
                var dx = Vector128.Create(Unsafe.ReadUnaligned<float>(xb));
                acc = Fma.MultiplyAdd(Sse2.ConvertToVector128Single(Sum4(s[0], s[1], s[2], s[3])), Vector128.Load(scales + 8 * k) * dx, acc);
                if (T.HasMins)
                {
                    acc = Fma.MultiplyAddNegated(Sse2.ConvertToVector128Single(MinSums4(minBytes + 4 * k, xb)), Vector128.Load(scales + 8 * k + 4) * dx, acc);
                }
            }
        }
        acc.Store(y);
    }

    /// <summary>
    /// Four rows' min sums Σ_j m_j·S_j (S_j: the activation's sum over sub-block j) at once: the rows' 32 min bytes widened in two
    /// loads, one vpmaddwd per two rows against S_0..S_7, and the four rows' partial sums added up together. About a third of
    /// the vector work of one <see cref="MinProducts"/> per row plus their horizontal sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<int> MinSums4(ulong* mins, byte* x)
    {
        var bsums = Vector256.Load((short*)(x + Q8KSums));
        // S_j = bsums[2j] + bsums[2j+1] (|S_j| ≤ 32·127: 16 bits suffice), then S_0..S_7 in each 128-bit half.
        var s = Avx2.Permute4x64(Avx2.HorizontalAdd(bsums, bsums).AsInt64(), 0x88).AsInt16();
        var p01 = Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16((byte*)mins), s);      // [row 0 (4 pairs) | row 1]
        var p23 = Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16((byte*)(mins + 2)), s); // [row 2 | row 3]
        var h = Avx2.HorizontalAdd(p01, p23); // [r0 r0 r2 r2 | r1 r1 r3 r3] partial sums
        h = Avx2.HorizontalAdd(h, h);         // [r0 r2 r0 r2 | r1 r3 r1 r3]
        return Sse2.UnpackLow(h.GetLower(), h.GetUpper());
    }

    /// <summary>
    /// Q4_K at the AVX2 level. Per super-block: the 6-bit scales are unpacked in general registers, zero-extended to words in
    /// both 128-bit halves, doubled into dwords (s_k, s_k) and each broadcast by vpshufd with an immediate (no index constants:
    /// the loop keeps every value in registers); the min correction is one vpmaddwd of the activation's sums of 16 against the
    /// mins repeated for their two sums.
    /// </summary>
    private readonly struct Q4KAvx2 : IKSuperBlock<Q4KAvx2>
    {
        public static int Bytes => Q4_KBytes;
        public static bool HasMins => true;
        public static bool Prefetch => true;
        private readonly Vector256<byte> _m4;

        private Q4KAvx2(int _) => _m4 = Vector256.Create((byte)0xF);

        public static Q4KAvx2 Create() => new(0);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<int> Sums(byte* w, byte* x, out ulong mins)
        {
            var m4 = _m4;
            UnpackScaleMins(w + 4, out ulong scales, out mins);
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
            return (sum01 + sum23) + (sum45 + sum67);
        }
    }

    /// <summary>Q5_K at the AVX2 level: Q4_K's nibbles with the fifth bit from qh.</summary>
    private readonly struct Q5KAvx2 : IKSuperBlock<Q5KAvx2>
    {
        public static int Bytes => Q5_KBytes;
        public static bool HasMins => true;
        public static bool Prefetch => true;
        private readonly Vector256<byte> _m4, _bit4;

        private Q5KAvx2(int _)
        {
            _m4 = Vector256.Create((byte)0xF);
            _bit4 = Vector256.Create((byte)0x10);
        }

        public static Q5KAvx2 Create() => new(0);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<int> Sums(byte* w, byte* x, out ulong mins)
        {
            UnpackScaleMins(w + 4, out ulong scales, out mins);
            var sc = Avx2.UnpackLow(Avx2.BroadcastScalarToVector256(Vector128.CreateScalar(scales)).AsByte(), Vector256<byte>.Zero).AsInt16();
            var s03 = Avx2.UnpackLow(sc, sc).AsInt32();  // (s0,s0) (s1,s1) (s2,s2) (s3,s3) in each half, as in Q4KAvx2
            var s47 = Avx2.UnpackHigh(sc, sc).AsInt32();
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var qh = Vector256.Load(w + 16);
            var sumi = Chunk(w, qh, 0, q8, Avx2.Shuffle(s03, 0x00).AsInt16(), Avx2.Shuffle(s03, 0x55).AsInt16())
                     + Chunk(w, qh, 1, q8, Avx2.Shuffle(s03, 0xAA).AsInt16(), Avx2.Shuffle(s03, 0xFF).AsInt16())
                     + Chunk(w, qh, 2, q8, Avx2.Shuffle(s47, 0x00).AsInt16(), Avx2.Shuffle(s47, 0x55).AsInt16())
                     + Chunk(w, qh, 3, q8, Avx2.Shuffle(s47, 0xAA).AsInt16(), Avx2.Shuffle(s47, 0xFF).AsInt16());
            return sumi;
        }

        /// <summary>64-element chunk <paramref name="c"/>: the low nibbles (fifth bit: bit 2c of qh) and the high nibbles (bit 2c+1).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private Vector256<int> Chunk(byte* w, Vector256<byte> qh, int c, sbyte* q8, Vector256<short> scaleLo, Vector256<short> scaleHi)
        {
            var q = Vector256.Load(w + 48 + 32 * c);
            var mLo = Vector256.Create((byte)(1 << (2 * c)));
            var mHi = Vector256.Create((byte)(2 << (2 * c)));
            var lo = (q & _m4) | (Vector256.Equals(qh & mLo, mLo) & _bit4);
            var hi = Vector256.ShiftRightLogical(q, 4) | (Vector256.Equals(qh & mHi, mHi) & _bit4);
            return ScaledDot(lo, Vector256.Load(q8 + 64 * c), scaleLo) + ScaledDot(hi, Vector256.Load(q8 + 64 * c + 32), scaleHi);
        }
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

    /// <summary>Q6_K at the AVX2 level: the 16 scales widened once; each group's pair (2g for its first 16 elements, 2g+1 for the
    /// next) broadcast by vpshufb; the −32 offset folded into the integer total.</summary>
    private readonly struct Q6KAvx2 : IKSuperBlock<Q6KAvx2>
    {
        public static int Bytes => Q6_KBytes;
        public static bool HasMins => false;
        public static bool Prefetch => true;

        public static Q6KAvx2 Create() => default;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<int> Sums(byte* w, byte* x, out ulong mins)
        {
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var sc16 = Avx2.ConvertToVector256Int16((sbyte*)w + 192);
            var sumi = Q6HalfDot(w, 0, Avx2.Permute4x64(sc16.AsInt64(), 0x44).AsByte(), q8)
                     + Q6HalfDot(w, 1, Avx2.Permute4x64(sc16.AsInt64(), 0xEE).AsByte(), q8 + 128);
            mins = 0;
            return sumi - Avx2.ShiftLeftLogical(Q6OffsetProducts(sc16, x), 5);
        }
    }

    // ---------------------------------------------------------------- AVX-512 (one 64-element chunk per register)

    /// <summary>vpermw indices spreading 16-bit lanes 2c and 2c+1 over the low and high 16 lanes (chunk c of a K-quant super-block).</summary>
    /// (Made of 64-bit lanes: <c>Vector512.Create(lower, upper)</c> of two 256-bit halves went through the stack inside loops.)
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<short> ChunkScaleIndex(int c)
    {
        ulong lo = 0x0001000100010001UL * (ulong)(2 * c), hi = 0x0001000100010001UL * (ulong)(2 * c + 1);
        return Vector512.Create(lo, lo, lo, lo, hi, hi, hi, hi).AsInt16();
    }

    /// <summary>Q4_K at the AVX-512 level: each 64-element chunk's nibbles in one register, the scales spread by vpermw.</summary>
    private readonly struct Q4KAvx512 : IKSuperBlock<Q4KAvx512>
    {
        public static int Bytes => Q4_KBytes;
        public static bool HasMins => true;
        public static bool Prefetch => false;
        private readonly Vector256<byte> _m4;
        private readonly Vector512<short> _i0, _i1, _i2, _i3;

        private Q4KAvx512(int _)
        {
            _m4 = Vector256.Create((byte)0xF);
            (_i0, _i1, _i2, _i3) = (ChunkScaleIndex(0), ChunkScaleIndex(1), ChunkScaleIndex(2), ChunkScaleIndex(3));
        }

        public static Q4KAvx512 Create() => new(0);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<int> Sums(byte* w, byte* x, out ulong mins)
        {
            var m4 = _m4;
            UnpackScaleMins(w + 4, out ulong scales, out mins);
            var sc16 = Avx2.ConvertToVector256Int16(Vector128.CreateScalar(scales).AsByte()).ToVector512Unsafe();
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var q = Vector256.Load(w + 16);
            var sumi = ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)), Vector512.Load(q8), Avx512BW.PermuteVar32x16(sc16, _i0));
            q = Vector256.Load(w + 48);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)), Vector512.Load(q8 + 64), Avx512BW.PermuteVar32x16(sc16, _i1));
            q = Vector256.Load(w + 80);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)), Vector512.Load(q8 + 128), Avx512BW.PermuteVar32x16(sc16, _i2));
            q = Vector256.Load(w + 112);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)), Vector512.Load(q8 + 192), Avx512BW.PermuteVar32x16(sc16, _i3));
            return sumi.GetLower() + sumi.GetUpper();
        }
    }

    /// <summary>Q5_K at the AVX-512 level: as <see cref="Q4KAvx512"/> with the fifth bits (the low 32 lanes of chunk c take bit
    /// 2c of qh, the high 32 lanes bit 2c+1).</summary>
    private readonly struct Q5KAvx512 : IKSuperBlock<Q5KAvx512>
    {
        public static int Bytes => Q5_KBytes;
        public static bool HasMins => true;
        public static bool Prefetch => false;
        private readonly Vector256<byte> _m4;
        private readonly Vector512<byte> _bit4, _mask;
        private readonly Vector512<short> _i0, _i1, _i2, _i3;

        private Q5KAvx512(int _)
        {
            _m4 = Vector256.Create((byte)0xF);
            _bit4 = Vector512.Create((byte)0x10);
            _mask = Vector512.Create(0x0101010101010101UL, 0x0101010101010101UL, 0x0101010101010101UL, 0x0101010101010101UL,
                                     0x0202020202020202UL, 0x0202020202020202UL, 0x0202020202020202UL, 0x0202020202020202UL).AsByte();
            (_i0, _i1, _i2, _i3) = (ChunkScaleIndex(0), ChunkScaleIndex(1), ChunkScaleIndex(2), ChunkScaleIndex(3));
        }

        public static Q5KAvx512 Create() => new(0);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<int> Sums(byte* w, byte* x, out ulong mins)
        {
            var m4 = _m4;
            var bit4 = _bit4;
            UnpackScaleMins(w + 4, out ulong scales, out mins);
            var sc16 = Avx2.ConvertToVector256Int16(Vector128.CreateScalar(scales).AsByte()).ToVector512Unsafe();
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var qh256 = Vector256.Load(w + 16);
            var qh = Join(qh256, qh256);
            var mask = _mask;
            var q = Vector256.Load(w + 48);
            var sumi = ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)) | (Vector512.Equals(qh & mask, mask) & bit4), Vector512.Load(q8), Avx512BW.PermuteVar32x16(sc16, _i0));
            mask = Vector512.ShiftLeft(mask, 2);
            q = Vector256.Load(w + 80);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)) | (Vector512.Equals(qh & mask, mask) & bit4), Vector512.Load(q8 + 64), Avx512BW.PermuteVar32x16(sc16, _i1));
            mask = Vector512.ShiftLeft(mask, 2);
            q = Vector256.Load(w + 112);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)) | (Vector512.Equals(qh & mask, mask) & bit4), Vector512.Load(q8 + 128), Avx512BW.PermuteVar32x16(sc16, _i2));
            mask = Vector512.ShiftLeft(mask, 2);
            q = Vector256.Load(w + 144);
            sumi += ScaledDot(Join(q & m4, Vector256.ShiftRightLogical(q, 4)) | (Vector512.Equals(qh & mask, mask) & bit4), Vector512.Load(q8 + 192), Avx512BW.PermuteVar32x16(sc16, _i3));
            return sumi.GetLower() + sumi.GetUpper();
        }
    }

    /// <summary>Q6_K at the AVX-512 level: two 32-element groups per register, vpermw spreading scales 4m..4m+3 over four
    /// 8-lane groups (one 16-element sub-block each). A half's groups are built as two 512-bit registers straight away: its 64
    /// low-bit bytes in one load, its 32 high-bit bytes in both 256-bit halves, and per-half shift counts (vpsllvw, vpsrlvw) put
    /// each group's two bits at bits 4..5: twelve operations per half where the 256-bit unpacking (<see cref="Q6Half"/>) and two
    /// inserts took 22 (Q6_K generation in the cache 13–17% faster, docs/benchmarks.md). The integer sums are unchanged, so are
    /// the results (docs/batching.md#batch-invariance-on-the-cpu). The high bytes are loaded as 256 bits and inserted, not taken by
    /// Avx512F.BroadcastVector256ToVector512 from memory: that form faulted on the last block before a guard page in the tests
    /// (the load it compiled to read past the block's 210 bytes).</summary>
    private readonly struct Q6KAvx512 : IKSuperBlock<Q6KAvx512>
    {
        public static int Bytes => Q6_KBytes;
        public static bool HasMins => false;
        public static bool Prefetch => false;
        private readonly Vector512<short> _spread, _four;
        private readonly Vector512<byte> _m4, _m30;
        private readonly Vector512<ushort> _up01, _down23;

        private Q6KAvx512(int _)
        {
            _spread = Vector512.Create((short)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
            _four = Vector512.Create((short)4);
            _m4 = Vector512.Create((byte)0xF);
            _m30 = Vector512.Create((byte)0x30);
            // Groups 0 and 1 take high bits 0..1 and 2..3 (shifted up by 4 and 2); groups 2 and 3 bits 4..5 and 6..7 (down by 0 and 2).
            const ulong four = 0x0004000400040004UL, two = 0x0002000200020002UL;
            _up01 = Vector512.Create(four, four, four, four, two, two, two, two).AsUInt16();
            _down23 = Vector512.Create(0UL, 0, 0, 0, two, two, two, two).AsUInt16();
        }

        public static Q6KAvx512 Create() => new(0);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<int> Sums(byte* w, byte* x, out ulong mins)
        {
            var idx = _spread;
            var four = _four;
            var m4 = _m4;
            var m30 = _m30;
            sbyte* q8 = (sbyte*)x + Q8KQs;
            var scales16 = Avx2.ConvertToVector256Int16((sbyte*)w + 192).ToVector512Unsafe();
            Vector512<int> sumi = default;
            for (int h = 0; h < 2; h++)
            {
                var ql = Vector512.Load(w + 64 * h);
                var hb256 = Vector256.Load(w + 128 + 32 * h);
                var hb = Join(hb256, hb256).AsUInt16();
                var q01 = (ql & m4) | (Avx512BW.ShiftLeftLogicalVariable(hb, _up01).AsByte() & m30);
                var q23 = (Avx512BW.ShiftRightLogical(ql.AsUInt16(), 4).AsByte() & m4) | (Avx512BW.ShiftRightLogicalVariable(hb, _down23).AsByte() & m30);
                sbyte* y = q8 + 128 * h;
                sumi += ScaledDot(q01, Vector512.Load(y), Avx512BW.PermuteVar32x16(scales16, idx));
                idx += four;
                sumi += ScaledDot(q23, Vector512.Load(y + 64), Avx512BW.PermuteVar32x16(scales16, idx));
                idx += four;
            }
            mins = 0;
            return sumi.GetLower() + sumi.GetUpper() - Avx2.ShiftLeftLogical(Q6OffsetProducts(scales16.GetLower(), x), 5);
        }
    }
}

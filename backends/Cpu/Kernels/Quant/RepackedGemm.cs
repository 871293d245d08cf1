using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// Prompt-sized matmuls (many tokens; for Q4_0 from 3, several sequences decoding together) on AVX2 for four weight types — Q4_0, Q8_0, Q4_K and Q6_K (<see cref="Supports"/>;
/// <see cref="KernelsFor"/> picks each type's repack and token kernels) — with SIMD lanes over weight rows instead of over
/// elements. Each thread takes a group of 8 weight rows and repacks it, block by block, into its own small L1-sized buffer,
/// so that one vector instruction advances all 8 rows' dot products at once: no horizontal sums, no per-row scalar work.
/// The repack is paid once per row group and reused for every token; the file's bytes are never modified (weights stay
/// in place). Q4_0 matrices the CPU queue keeps repacked (<see cref="RepackedWeights"/>) skip the repack altogether: their
/// groups are read from that copy by <see cref="Job.SetPacked"/>'s sweep at every token count (docs/batching.md#cpu-weights-repacked-once).
/// <list type="bullet">
/// <item>Q4_0 (160 bytes per 32-element block, <see cref="Q4GroupBlockBytes"/>): the nibbles stay packed as in the file — byte j
/// of a row's block holds elements j (low nibble) and 16 + j (high) — and for p = 0..3 the 8 rows' bytes 4p..4p+3 lie next to each
/// other (32 bytes), followed by the 8 row scales as floats. A mask and a shift of one such vector give chunk p (elements
/// 4p..4p+3) and chunk p + 4 (elements 16 + 4p ..) of all 8 rows as unsigned values 0..15; one vpdpbusd (VNNI) — or vpmaddubsw,
/// whose int16 partial sums stay exact (8 chunks × ≤ 3810), and one vpmaddwd per block — of a chunk with a token's four
/// activation bytes broadcast to every lane advances the 8 rows by 4 elements. Each block ends with one conversion and one
/// FMA whose scale vector is the 8 row scales times the token's. The −8 offset is applied as −8·Σx per (token, block).
/// The repack is a 4×4 transpose of dwords per 128-bit lane (rows r and r + 4 share a register): parallel decoding of a few
/// sequences repacks every matrix at every step, so the repack must cost less than the tokens' arithmetic.</item>
/// <item>Q8_0: each weight is split into a high and a low nibble plane (w = 16·(h − 8) + l), each laid out as 8 chunks × 8 rows × 4
/// unpacked values (<see cref="GroupBlockBytes"/>), so
/// the same unsigned × signed products apply; the offset becomes −128·Σx.</item>
/// <item>Q4_K and Q6_K (256-element super-blocks against Q8_K activations): the same 8-row interleave of the values, with
/// the 8 rows' sub-block scales unpacked beside them as int16 pairs that one vpmaddwd applies; Q4_K's mins and Q6_K's −32
/// offset are applied through the activations' per-sub-block sums (<see cref="Q4KGroupBlockBytes"/>,
/// <see cref="Q6KGroupBlockBytes"/>).</item>
/// </list>
/// Results are bit-identical to the per-row kernels': the integer sums are formed differently but are exact, and the float
/// part is the canonical one (per row and token, one FMA per block in block order, <see cref="Finish"/>; for Q8_0 into two
/// accumulators that take the blocks in turn; QuantDot.Lanes.cs, docs/batching.md#batch-invariance-on-the-cpu).
/// RepackedGemmTests and BatchInvarianceTests assert this.
/// </summary>
internal static unsafe class RepackedGemm
{
    /// <summary>Weight rows per group: one per 32-bit lane of a 256-bit register.</summary>
    public const int GroupRows = 8;

    /// <summary>Fewest tokens for which the repack pays off; fewer go through the multi-token kernels.</summary>
    public const int MinTokens = 8;

    /// <summary>Fewest tokens for which <paramref name="weightType"/>'s repack pays off (Q4_0: 3, measured in docs/batching.md; MinTokens otherwise).</summary>
    public static int MinTokensFor(GgmlType weightType) => weightType == GgmlType.Q4_0 ? 3 : MinTokens;

    private const int Q4_0Bytes = 18, Q8_0Bytes = 34, BlockElements = 32;

    /// <summary>Bytes of one repacked 8-row block of unpacked values: 8 chunks × 32 bytes, then 8 float scales.</summary>
    public const int GroupBlockBytes = 8 * 32 + 8 * sizeof(float);

    /// <summary>Bytes of one repacked 8-row Q4_0 block: 4 × 32 bytes of packed nibbles, then 8 float scales.</summary>
    public const int Q4GroupBlockBytes = 4 * 32 + 8 * sizeof(float);

    /// <summary>Bytes of one repacked 8-row Q8_0 block: the high-nibble plane, the low-nibble plane, then 8 float scales.</summary>
    public const int Q8GroupBlockBytes = 2 * 8 * 32 + 8 * sizeof(float);

    /// <summary>The repack and the two token kernels of one weight type, and the per-token terms it needs.</summary>
    internal readonly struct TypeKernels
    {
        /// <summary>Repacks 8 rows: (rows, rowBytes, blocks, destination).</summary>
        public readonly delegate*<byte*, long, long, byte*, void> Repack;
        /// <summary>Several tokens against one group: (group, blocks, act, actRowBytes, scales, terms, y, yStride).</summary>
        public readonly delegate*<byte*, long, byte*, long, float*, void*, float*, long, void> Tokens;
        /// <summary>Tokens per <see cref="Tokens"/> call.</summary>
        public readonly int Width;
        /// <summary>One token against one group: (group, blocks, act, scales, terms, y).</summary>
        public readonly delegate*<byte*, long, byte*, float*, void*, float*, void> Token;
        /// <summary>Bytes of per-token terms per block (0: the kernel reads the activation's own).</summary>
        public readonly int TermBytes;

        public TypeKernels(delegate*<byte*, long, long, byte*, void> repack, delegate*<byte*, long, byte*, long, float*, void*, float*, long, void> tokens,
                           int width, delegate*<byte*, long, byte*, float*, void*, float*, void> token, int termBytes)
        {
            Repack = repack; Tokens = tokens; Width = width; Token = token; TermBytes = termBytes;
        }
    }

    /// <summary>The kernels for <paramref name="weightType"/> (one of the <see cref="Supports"/> types).</summary>
    internal static TypeKernels KernelsFor(GgmlType weightType) => weightType switch
    {
        GgmlType.Q4_0 => new(&RepackQ4_0, &Q4_0Tokens4, 4, &Q4_0Tokens1, sizeof(int)),
        GgmlType.Q8_0 => new(&RepackQ8_0, &Q8_0Tokens2, 2, &Q8_0Tokens1, sizeof(int)),
        GgmlType.Q4_K => new(&RepackQ4_K, &Q4_KTokens4, 4, &Q4_KTokens1, 8 * sizeof(short)),
        GgmlType.Q6_K => new(&RepackQ6_K, &Q6_KTokens2, 2, &Q6_KTokens1, 0),
        _ => throw new NotSupportedException($"no repacked kernel for {weightType}"),
    };

    /// <summary>
    /// Fills one activation row's terms: <paramref name="scales"/> (blocks floats) and <paramref name="terms"/>
    /// (blocks × <see cref="TypeKernels.TermBytes"/>). Called for each row right after it is quantized.
    /// </summary>
    internal static void PrepareActivation(GgmlType weightType, byte* row, long blocks, float* scales, byte* terms)
    {
        switch (weightType)
        {
            case GgmlType.Q6_K: break; // reads the activation's own scale and sums
            case GgmlType.Q4_K: PrepareQ8_KActivationRow(row, blocks, scales, (short*)terms); break;
            default: PrepareActivationRow(row, blocks, OffsetFactor(weightType), scales, (int*)terms); break;
        }
    }

    /// <summary>Whether <paramref name="weightType"/> has a repacked kernel at <paramref name="isa"/>.</summary>
    public static bool Supports(GgmlType weightType, KernelIsa isa) => isa != KernelIsa.Scalar && weightType is GgmlType.Q4_0 or GgmlType.Q8_0 or GgmlType.Q4_K or GgmlType.Q6_K;

    /// <summary>Bytes of one repacked 8-row block (32 elements; a 256-element super-block for Q4_K) of <paramref name="weightType"/>.</summary>
    public static int GroupBlockBytesFor(GgmlType weightType) => weightType switch
    {
        GgmlType.Q8_0 => Q8GroupBlockBytes,
        GgmlType.Q4_K => Q4KGroupBlockBytes,
        GgmlType.Q6_K => Q6KGroupBlockBytes,
        _ => Q4GroupBlockBytes,
    };

    /// <summary>Elements per block of the repacked layout.</summary>
    public static int BlockElementsFor(GgmlType weightType) => weightType is GgmlType.Q4_K or GgmlType.Q6_K ? 256 : BlockElements;

    /// <summary>The per-block activation offset factor: Q4_0 stores q − 8 (offset 8); Q8_0's high-nibble plane stores
    /// (w >> 4) + 8 with weight 16, so its offset is 16 · 8 = 128.</summary>
    public static int OffsetFactor(GgmlType weightType) => weightType == GgmlType.Q8_0 ? 128 : 8;

    /// <summary>
    /// Per-token, per-block activation terms the kernel needs besides the quantized values: the block's scale as a float and
    /// <paramref name="offsetFactor"/>·Σq (the weights' offset correction, <see cref="OffsetFactor"/>). <paramref name="act"/> is one
    /// Q8_0 activation row of <paramref name="blocks"/> blocks.
    /// </summary>
    public static void PrepareActivationRow(byte* act, long blocks, int offsetFactor, float* scales, int* offsetSums)
    {
        for (long b = 0; b < blocks; b++, act += Q8_0Bytes)
        {
            scales[b] = HalfConversion.Load(act);
            // Σq over 32 int8 as 8 int32 lanes: vpmaddubsw with 1s then vpmaddwd with 1s.
            var sums = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(Vector256<byte>.One, Vector256.Load((sbyte*)act + 2)), Vector256<short>.One);
            offsetSums[b] = offsetFactor * Vector256.Sum(sums);
        }
    }

    /// <summary>Repacks rows <c>w, w + rowBytes, …</c> (8 Q4_0 rows of <paramref name="blocks"/> blocks) into <paramref name="dst"/>
    /// (layout: <see cref="Q4GroupBlockBytes"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RepackQ4_0(byte* w, long rowBytes, long blocks, byte* dst)
    {
        for (long b = 0; b < blocks; b++, dst += Q4GroupBlockBytes, w += Q4_0Bytes)
        {
            // a_r = [row r's 16 packed bytes | row r + 4's] as dwords [r_0 r_1 r_2 r_3 | s_0 s_1 s_2 s_3].
            var a0 = PackedPair(w, w + 4 * rowBytes);
            var a1 = PackedPair(w + rowBytes, w + 5 * rowBytes);
            var a2 = PackedPair(w + 2 * rowBytes, w + 6 * rowBytes);
            var a3 = PackedPair(w + 3 * rowBytes, w + 7 * rowBytes);
            // Per 128-bit lane a 4×4 transpose: dword p of rows 0..3 (low lane) and 4..7 (high lane) side by side.
            var t0 = Avx2.UnpackLow(a0, a1).AsInt64(); var t1 = Avx2.UnpackHigh(a0, a1).AsInt64();
            var t2 = Avx2.UnpackLow(a2, a3).AsInt64(); var t3 = Avx2.UnpackHigh(a2, a3).AsInt64();
            Avx2.UnpackLow(t0, t2).Store((long*)dst);
            Avx2.UnpackHigh(t0, t2).Store((long*)(dst + 32));
            Avx2.UnpackLow(t1, t3).Store((long*)(dst + 64));
            Avx2.UnpackHigh(t1, t3).Store((long*)(dst + 96));
            Vector256.Create(HalfConversion.Load(w), HalfConversion.Load(w + rowBytes), HalfConversion.Load(w + 2 * rowBytes), HalfConversion.Load(w + 3 * rowBytes),
                             HalfConversion.Load(w + 4 * rowBytes), HalfConversion.Load(w + 5 * rowBytes), HalfConversion.Load(w + 6 * rowBytes), HalfConversion.Load(w + 7 * rowBytes))
                .Store((float*)(dst + 128));
        }
    }

    /// <summary>The 16 packed bytes of two Q4_0 blocks as one vector, <paramref name="lo"/>'s in the low 128-bit lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PackedPair(byte* lo, byte* hi)
        => Avx2.InsertVector128(Vector128.Load(lo + 2).ToVector256Unsafe(), Vector128.Load(hi + 2), 1).AsInt32();

    /// <summary>
    /// Repacks 8 Q8_0 rows. A weight w (−128..127) is split as w = 16·(h − 8) + l with h = (w &gt;&gt; 4) + 8 and l = w &amp; 15, both
    /// 0..15, so each plane feeds vpmaddubsw like Q4_0's nibbles with exact int16 block sums:
    /// Σw·x = 16·Σh·x + Σl·x − 128·Σx. Plane h comes first (8 chunks × 32 bytes), then plane l, then the scales.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RepackQ8_0(byte* w, long rowBytes, long blocks, byte* dst)
    {
        var lowMask = Vector256.Create((byte)0xF);
        var eight = Vector256.Create((byte)8);
        for (long b = 0; b < blocks; b++, dst += Q8GroupBlockBytes)
        {
            float* scales = (float*)(dst + 512);
            for (int r = 0; r < GroupRows; r++)
            {
                byte* block = w + r * rowBytes + b * Q8_0Bytes;
                scales[r] = HalfConversion.Load(block);
                var q = Vector256.Load(block + 2);
                // (w >> 4) + 8 per byte: a 16-bit logical shift, masked, then +8 with the sign bit folded in (xor 8 = +8 mod 16).
                var high = ((Vector256.ShiftRightLogical(q.AsUInt16(), 4).AsByte() & lowMask) ^ eight).AsUInt32();
                var low = (q & lowMask).AsUInt32();
                uint* hi = (uint*)dst + r, lo = (uint*)(dst + 256) + r;
                hi[0] = high.GetElement(0); hi[8] = high.GetElement(1); hi[16] = high.GetElement(2); hi[24] = high.GetElement(3);
                hi[32] = high.GetElement(4); hi[40] = high.GetElement(5); hi[48] = high.GetElement(6); hi[56] = high.GetElement(7);
                lo[0] = low.GetElement(0); lo[8] = low.GetElement(1); lo[16] = low.GetElement(2); lo[24] = low.GetElement(3);
                lo[32] = low.GetElement(4); lo[40] = low.GetElement(5); lo[48] = low.GetElement(6); lo[56] = low.GetElement(7);
            }
        }
    }

    /// <summary>Chunk k of one block for one token: 8 rows × 4 elements, int16 pair sums added to <paramref name="sum"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Chunk(Vector256<byte> weights, byte* x, int k, Vector256<short> sum)
        => sum + Avx2.MultiplyAddAdjacent(weights, Vector256.Create(Unsafe.ReadUnaligned<int>(x + 2 + 4 * k)).AsSByte());

    /// <summary>Eight consecutive chunks (32 elements of 8 rows) for one token: the int16 sums of a whole block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Chunks8(byte* chunks, byte* x)
    {
        var s = Chunk(Vector256.Load(chunks), x, 0, default);
        s = Chunk(Vector256.Load(chunks + 32), x, 1, s);
        s = Chunk(Vector256.Load(chunks + 64), x, 2, s);
        s = Chunk(Vector256.Load(chunks + 96), x, 3, s);
        s = Chunk(Vector256.Load(chunks + 128), x, 4, s);
        s = Chunk(Vector256.Load(chunks + 160), x, 5, s);
        s = Chunk(Vector256.Load(chunks + 192), x, 6, s);
        return Chunk(Vector256.Load(chunks + 224), x, 7, s);
    }

    /// <summary>Chunk k for four tokens: the weight vector is loaded once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Chunk4(byte* group, int k, byte* x0, byte* x1, byte* x2, byte* x3,
                               ref Vector256<short> s0, ref Vector256<short> s1, ref Vector256<short> s2, ref Vector256<short> s3)
    {
        var wk = Vector256.Load(group + 32 * k);
        s0 = Chunk(wk, x0, k, s0);
        s1 = Chunk(wk, x1, k, s1);
        s2 = Chunk(wk, x2, k, s2);
        s3 = Chunk(wk, x3, k, s3);
    }

    /// <summary>Finishes one block for one token: exact int32 per row minus the offset, scaled and accumulated.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Finish(Vector256<int> sumi, int offset, Vector256<float> rowScales, float tokenScale, Vector256<float> acc)
        => Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi - Vector256.Create(offset)), rowScales * Vector256.Create(tokenScale), acc);

    /// <summary>Token activation bytes 4k..4k+3 of a Q8_0 block broadcast to every lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Broadcast4(byte* x, int k) => Vector256.Create(Unsafe.ReadUnaligned<int>(x + 2 + 4 * k)).AsSByte();

    /// <summary>Chunks p and p + 4 of 8 rows (elements 4p..4p+3 and 16 + 4p..): the low and high nibbles of packed vector p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Unpack(byte* group, int p, out Vector256<byte> low, out Vector256<byte> high)
    {
        var v = Vector256.Load(group + 32 * p);
        var mask = Vector256.Create((byte)0xF);
        low = v & mask;
        high = Vector256.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & mask;
    }

    /// <summary>One Q4_0 block of 8 rows against one token: the exact int32 sums per row. With VNNI (vpdpbusd) each chunk is one
    /// instruction into int32 lanes (low-nibble chunks and high-nibble chunks in two accumulators, so the chain is half as long);
    /// without it int16 pair sums and one vpmaddwd. (The four packed vectors are written out: the JIT does not unroll loops, and
    /// a loop counter costs as much as a chunk.)</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> BlockSums(byte* group, byte* x)
    {
        if (AvxVnni.IsSupported)
        {
            Vector256<int> lo = default, hi = default;
            PackedVnni(group, 0, x, ref lo, ref hi); PackedVnni(group, 1, x, ref lo, ref hi);
            PackedVnni(group, 2, x, ref lo, ref hi); PackedVnni(group, 3, x, ref lo, ref hi);
            return lo + hi;
        }
        var s = Packed16(group, 0, x, default);
        s = Packed16(group, 1, x, s); s = Packed16(group, 2, x, s); s = Packed16(group, 3, x, s);
        return Avx2.MultiplyAddAdjacent(s, Vector256<short>.One);
    }

    /// <summary>Packed vector p against one token with VNNI: chunk p into <paramref name="lo"/>, chunk p + 4 into <paramref name="hi"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PackedVnni(byte* group, int p, byte* x, ref Vector256<int> lo, ref Vector256<int> hi)
    {
        Unpack(group, p, out var l, out var h);
        lo = AvxVnni.MultiplyWideningAndAdd(lo, l, Broadcast4(x, p));
        hi = AvxVnni.MultiplyWideningAndAdd(hi, h, Broadcast4(x, p + 4));
    }

    /// <summary>Packed vector p against one token without VNNI: chunks p and p + 4 as int16 pair sums added to <paramref name="s"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Packed16(byte* group, int p, byte* x, Vector256<short> s)
    {
        Unpack(group, p, out var l, out var h);
        return s + Avx2.MultiplyAddAdjacent(l, Broadcast4(x, p)) + Avx2.MultiplyAddAdjacent(h, Broadcast4(x, p + 4));
    }

    /// <summary>Packed vector p against four tokens with VNNI (unpacked once).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PackedVnni4(byte* group, int p, byte* x0, byte* x1, byte* x2, byte* x3,
                                    ref Vector256<int> l0, ref Vector256<int> l1, ref Vector256<int> l2, ref Vector256<int> l3,
                                    ref Vector256<int> h0, ref Vector256<int> h1, ref Vector256<int> h2, ref Vector256<int> h3)
    {
        Unpack(group, p, out var l, out var h);
        l0 = AvxVnni.MultiplyWideningAndAdd(l0, l, Broadcast4(x0, p)); h0 = AvxVnni.MultiplyWideningAndAdd(h0, h, Broadcast4(x0, p + 4));
        l1 = AvxVnni.MultiplyWideningAndAdd(l1, l, Broadcast4(x1, p)); h1 = AvxVnni.MultiplyWideningAndAdd(h1, h, Broadcast4(x1, p + 4));
        l2 = AvxVnni.MultiplyWideningAndAdd(l2, l, Broadcast4(x2, p)); h2 = AvxVnni.MultiplyWideningAndAdd(h2, h, Broadcast4(x2, p + 4));
        l3 = AvxVnni.MultiplyWideningAndAdd(l3, l, Broadcast4(x3, p)); h3 = AvxVnni.MultiplyWideningAndAdd(h3, h, Broadcast4(x3, p + 4));
    }

    /// <summary>Packed vector p against four tokens without VNNI (unpacked once).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Packed16x4(byte* group, int p, byte* x0, byte* x1, byte* x2, byte* x3,
                                   ref Vector256<short> s0, ref Vector256<short> s1, ref Vector256<short> s2, ref Vector256<short> s3)
    {
        Unpack(group, p, out var l, out var h);
        s0 += Avx2.MultiplyAddAdjacent(l, Broadcast4(x0, p)) + Avx2.MultiplyAddAdjacent(h, Broadcast4(x0, p + 4));
        s1 += Avx2.MultiplyAddAdjacent(l, Broadcast4(x1, p)) + Avx2.MultiplyAddAdjacent(h, Broadcast4(x1, p + 4));
        s2 += Avx2.MultiplyAddAdjacent(l, Broadcast4(x2, p)) + Avx2.MultiplyAddAdjacent(h, Broadcast4(x2, p + 4));
        s3 += Avx2.MultiplyAddAdjacent(l, Broadcast4(x3, p)) + Avx2.MultiplyAddAdjacent(h, Broadcast4(x3, p + 4));
    }

    /// <summary>One Q4_0 block of 8 rows against four tokens: the exact int32 sums per row of each token (see <see cref="BlockSums"/>).
    /// Each packed vector is loaded and unpacked once for the four tokens; with VNNI eight independent chains.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void BlockSums4(byte* group, byte* x0, byte* x1, byte* x2, byte* x3,
                                   out Vector256<int> i0, out Vector256<int> i1, out Vector256<int> i2, out Vector256<int> i3)
    {
        if (AvxVnni.IsSupported)
        {
            Vector256<int> l0 = default, l1 = default, l2 = default, l3 = default, h0 = default, h1 = default, h2 = default, h3 = default;
            PackedVnni4(group, 0, x0, x1, x2, x3, ref l0, ref l1, ref l2, ref l3, ref h0, ref h1, ref h2, ref h3);
            PackedVnni4(group, 1, x0, x1, x2, x3, ref l0, ref l1, ref l2, ref l3, ref h0, ref h1, ref h2, ref h3);
            PackedVnni4(group, 2, x0, x1, x2, x3, ref l0, ref l1, ref l2, ref l3, ref h0, ref h1, ref h2, ref h3);
            PackedVnni4(group, 3, x0, x1, x2, x3, ref l0, ref l1, ref l2, ref l3, ref h0, ref h1, ref h2, ref h3);
            i0 = l0 + h0; i1 = l1 + h1; i2 = l2 + h2; i3 = l3 + h3;
            return;
        }
        Vector256<short> s0 = default, s1 = default, s2 = default, s3 = default;
        Packed16x4(group, 0, x0, x1, x2, x3, ref s0, ref s1, ref s2, ref s3);
        Packed16x4(group, 1, x0, x1, x2, x3, ref s0, ref s1, ref s2, ref s3);
        Packed16x4(group, 2, x0, x1, x2, x3, ref s0, ref s1, ref s2, ref s3);
        Packed16x4(group, 3, x0, x1, x2, x3, ref s0, ref s1, ref s2, ref s3);
        i0 = Avx2.MultiplyAddAdjacent(s0, Vector256<short>.One); i1 = Avx2.MultiplyAddAdjacent(s1, Vector256<short>.One);
        i2 = Avx2.MultiplyAddAdjacent(s2, Vector256<short>.One); i3 = Avx2.MultiplyAddAdjacent(s3, Vector256<short>.One);
    }

    /// <summary>
    /// Four tokens against one repacked group: <c>y[t * yStride + r] = Σ row r · token t</c> for r &lt; 8. Token t's
    /// activation row is at <c>act + t * actRowBytes</c>; its per-block scales and offsets at <c>scales/offsets + t * blocks</c>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q4_0Tokens4(byte* group, long blocks, byte* act, long actRowBytes, float* scales, void* terms, float* y, long yStride)
        => Q4_0Tokens4(group, blocks, act, actRowBytes, scales, (int*)terms, blocks, y, yStride, accumulate: false);

    /// <summary>
    /// <see cref="Q4_0Tokens4(byte*, long, byte*, long, float*, void*, float*, long)"/> over blocks 0 .. <paramref name="blocks"/> − 1
    /// of <paramref name="group"/>, which may be a slice of a longer row: token t's scales and offsets are at
    /// <c>+ t * termStride</c>, and with <paramref name="accumulate"/> the accumulators start from <paramref name="y"/>'s values
    /// (those of the slices before) instead of zero. Accumulating slice by slice performs the very same FMAs in the same block
    /// order, so the results are the bits of one pass over the row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q4_0Tokens4(byte* group, long blocks, byte* act, long actRowBytes, float* scales, int* offsets, long termStride,
                                    float* y, long yStride, bool accumulate, bool prefetch = false)
    {
        byte* x0 = act, x1 = act + actRowBytes, x2 = act + 2 * actRowBytes, x3 = act + 3 * actRowBytes;
        float* d0 = scales, d1 = scales + termStride, d2 = scales + 2 * termStride, d3 = scales + 3 * termStride;
        int* o0 = offsets, o1 = offsets + termStride, o2 = offsets + 2 * termStride, o3 = offsets + 3 * termStride;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        if (accumulate)
        {
            c0 = Vector256.Load(y); c1 = Vector256.Load(y + yStride); c2 = Vector256.Load(y + 2 * yStride); c3 = Vector256.Load(y + 3 * yStride);
        }
        for (long b = 0; b < blocks; b++, group += Q4GroupBlockBytes, x0 += Q8_0Bytes, x1 += Q8_0Bytes, x2 += Q8_0Bytes, x3 += Q8_0Bytes)
        {
            if (prefetch) PrefetchAhead(group);
            BlockSums4(group, x0, x1, x2, x3, out var s0, out var s1, out var s2, out var s3);
            var rowScales = Vector256.Load((float*)(group + 128));
            c0 = Finish(s0, o0[b], rowScales, d0[b], c0);
            c1 = Finish(s1, o1[b], rowScales, d1[b], c1);
            c2 = Finish(s2, o2[b], rowScales, d2[b], c2);
            c3 = Finish(s3, o3[b], rowScales, d3[b], c3);
        }
        c0.Store(y); c1.Store(y + yStride); c2.Store(y + 2 * yStride); c3.Store(y + 3 * yStride);
    }

    /// <summary>Finishes one Q8_0 block for one token: 16·Σh·x + Σl·x − 128·Σx, scaled and accumulated.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> FinishQ8(Vector256<short> high, Vector256<short> low, int offset, Vector256<float> rowScales, float tokenScale, Vector256<float> acc)
    {
        var sumi = Avx2.ShiftLeftLogical(Avx2.MultiplyAddAdjacent(high, Vector256<short>.One), 4)
                 + Avx2.MultiplyAddAdjacent(low, Vector256<short>.One) - Vector256.Create(offset);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), rowScales * Vector256.Create(tokenScale), acc);
    }

    /// <summary>Chunk k of both Q8_0 planes for two tokens (two tokens keep the four int16 sums per token in registers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ChunkQ8x2(byte* group, int k, byte* x0, byte* x1,
                                  ref Vector256<short> h0, ref Vector256<short> l0, ref Vector256<short> h1, ref Vector256<short> l1)
    {
        var wh = Vector256.Load(group + 32 * k);
        var wl = Vector256.Load(group + 256 + 32 * k);
        var a0 = Vector256.Create(Unsafe.ReadUnaligned<int>(x0 + 2 + 4 * k)).AsSByte();
        var a1 = Vector256.Create(Unsafe.ReadUnaligned<int>(x1 + 2 + 4 * k)).AsSByte();
        h0 += Avx2.MultiplyAddAdjacent(wh, a0);
        l0 += Avx2.MultiplyAddAdjacent(wl, a0);
        h1 += Avx2.MultiplyAddAdjacent(wh, a1);
        l1 += Avx2.MultiplyAddAdjacent(wl, a1);
    }

    /// <summary>Two tokens against one repacked Q8_0 group (layout as <see cref="Q4_0Tokens4"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q8_0Tokens2(byte* group, long blocks, byte* act, long actRowBytes, float* scales, void* terms, float* y, long yStride)
    {
        int* offsets = (int*)terms;
        byte* x0 = act, x1 = act + actRowBytes;
        float* d0 = scales, d1 = scales + blocks;
        int* o0 = offsets, o1 = offsets + blocks;
        Vector256<float> c0 = default, c1 = default, e0 = default, e1 = default; // Q8_0's even and odd blocks (c: the current one)
        for (long b = 0; b < blocks; b++, group += Q8GroupBlockBytes, x0 += Q8_0Bytes, x1 += Q8_0Bytes)
        {
            Vector256<short> h0 = default, l0 = default, h1 = default, l1 = default;
            ChunkQ8x2(group, 0, x0, x1, ref h0, ref l0, ref h1, ref l1);
            ChunkQ8x2(group, 1, x0, x1, ref h0, ref l0, ref h1, ref l1);
            ChunkQ8x2(group, 2, x0, x1, ref h0, ref l0, ref h1, ref l1);
            ChunkQ8x2(group, 3, x0, x1, ref h0, ref l0, ref h1, ref l1);
            ChunkQ8x2(group, 4, x0, x1, ref h0, ref l0, ref h1, ref l1);
            ChunkQ8x2(group, 5, x0, x1, ref h0, ref l0, ref h1, ref l1);
            ChunkQ8x2(group, 6, x0, x1, ref h0, ref l0, ref h1, ref l1);
            ChunkQ8x2(group, 7, x0, x1, ref h0, ref l0, ref h1, ref l1);
            var rowScales = Vector256.Load((float*)(group + 512));
            c0 = FinishQ8(h0, l0, o0[b], rowScales, d0[b], c0);
            c1 = FinishQ8(h1, l1, o1[b], rowScales, d1[b], c1);
            (c0, e0) = (e0, c0);
            (c1, e1) = (e1, c1);
        }
        (c0 + e0).Store(y); (c1 + e1).Store(y + yStride);
    }

    /// <summary>One token against one repacked Q8_0 group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q8_0Tokens1(byte* group, long blocks, byte* act, float* scales, void* terms, float* y)
    {
        int* offsets = (int*)terms;
        Vector256<float> c = default, other = default; // Q8_0's even and odd blocks
        for (long b = 0; b < blocks; b++, group += Q8GroupBlockBytes, act += Q8_0Bytes)
        {
            // The high plane's chunks, then the low plane's (the two-token form interleaves them; one token needs neither twice).
            c = FinishQ8(Chunks8(group, act), Chunks8(group + 256, act), offsets[b], Vector256.Load((float*)(group + 512)), scales[b], c);
            (c, other) = (other, c);
        }
        (c + other).Store(y);
    }

    /// <summary>One token against one repacked group (the tokens left over after groups of four).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q4_0Tokens1(byte* group, long blocks, byte* act, float* scales, void* terms, float* y)
        => Q4_0Tokens1(group, blocks, act, scales, (int*)terms, y, accumulate: false);

    /// <summary>One token against a slice of a repacked Q4_0 group (see the four-token slice kernel).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Q4_0Tokens1(byte* group, long blocks, byte* act, float* scales, int* offsets, float* y, bool accumulate, bool prefetch = false)
    {
        Vector256<float> c = accumulate ? Vector256.Load(y) : default;
        for (long b = 0; b < blocks; b++, group += Q4GroupBlockBytes, act += Q8_0Bytes)
        {
            if (prefetch) PrefetchAhead(group);
            c = Finish(BlockSums(group, act), offsets[b], Vector256.Load((float*)(group + 128)), scales[b], c);
        }
        c.Store(y);
    }

    /// <summary>How far ahead of the block being multiplied <see cref="PrefetchAhead"/> requests weights: one 4 KiB page. With
    /// several tokens, rows of 176 blocks (the FFN down projection) streamed 1.8× slower per byte than rows of 64 without it, and
    /// as fast with it (tools/MatMulBench, docs/batching.md#cpu-weights-repacked-once); shorter distances did not help.</summary>
    private const int AheadBytes = 4096;

    /// <summary>Requests the three cache lines one page ahead of <paramref name="group"/> (a block is 2.5 lines; a hint, never faults).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchAhead(byte* group)
    {
        byte* p = group + AheadBytes;
        Sse.Prefetch0(p);
        Sse.Prefetch0(p + 64);
        Sse.Prefetch0(p + 128);
    }

    /// <summary>Blocks per slice of <see cref="Q4_0GroupSliced"/>: 64 blocks (2048 elements) of a group are 10 KiB and four tokens'
    /// activations for them 8.5 KiB, which stay in a 32 KiB L1 together.</summary>
    private const int Q4SliceBlocks = 64;

    /// <summary>
    /// Every token against one whole repacked Q4_0 group kept in memory (<see cref="RepackedWeights"/>), for several tokens slice by
    /// slice of <see cref="Q4SliceBlocks"/> blocks, with the weights requested a page ahead. For a long row (the FFN down
    /// projection: 176 blocks, 28 KiB of weights per group and 24 KiB of activations for four tokens) one pass without the
    /// prefetch took 1.8× the time per byte of a 2048-column matrix when streamed from memory; slices and prefetch together
    /// brought it level (either alone did not). The same FMAs in the same order as one pass (the accumulators go through
    /// <paramref name="y"/> between slices), so the bits do not change.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Q4_0GroupSliced(byte* group, long blocks, byte* act, long actRowBytes, float* scales, int* offsets, long n, float* y, long yStride)
    {
        // One token reads its activation row once per group anyway: no slices for it.
        long slice = n == 1 ? blocks : Q4SliceBlocks;
        const bool prefetch = true;
        for (long b0 = 0; b0 < blocks; b0 += slice)
        {
            long count = Math.Min(slice, blocks - b0);
            byte* g = group + b0 * Q4GroupBlockBytes;
            bool accumulate = b0 > 0;
            long t = 0;
            for (; t + 4 <= n; t += 4)
                Q4_0Tokens4(g, count, act + t * actRowBytes + b0 * Q8_0Bytes, actRowBytes, scales + t * blocks + b0, offsets + t * blocks + b0, blocks,
                            y + t * yStride, yStride, accumulate, prefetch);
            for (; t < n; t++)
                Q4_0Tokens1(g, count, act + t * actRowBytes + b0 * Q8_0Bytes, scales + t * blocks + b0, offsets + t * blocks + b0, y + t * yStride, accumulate, prefetch);
        }
    }

    // ---------------------------------------------------------------- Q4_K (256-element super-blocks, Q8_K activations)

    /// <summary>
    /// Bytes of one repacked 8-row Q4_K super-block: 8 sub-blocks × 8 chunks × 32 bytes of nibble values (as for Q4_0), then per
    /// sub-block the 8 rows' 6-bit scales as int16 pairs (s_r, s_r) — one vpmaddwd applies them to the two int16 lanes a row's
    /// sums occupy — then the mins as int16 pairs (m_r,2p, m_r,2p+1) for p = 0..3, then d and dmin of the 8 rows as floats.
    /// </summary>
    public const int Q4KGroupBlockBytes = 8 * 256 + 8 * 32 + 4 * 32 + 2 * 8 * sizeof(float);
    private const int Q4KScalesAt = 2048, Q4KMinsAt = 2048 + 256, Q4KDAt = 2048 + 256 + 128, Q4KDminAt = Q4KDAt + 32;
    private const int Q4_KBytes = 144, Q8_KBytes = 292, Q8KSums = 260;

    /// <summary>Per token and super-block: the Q8_K scale and the 8 sub-block sums Σq (int16; |Σ| ≤ 32·127) for the min correction.</summary>
    public static void PrepareQ8_KActivationRow(byte* act, long superBlocks, float* scales, short* subSums)
    {
        for (long b = 0; b < superBlocks; b++, act += Q8_KBytes, subSums += 8)
        {
            scales[b] = Unsafe.ReadUnaligned<float>(act);
            short* sums16 = (short*)(act + Q8KSums);
            for (int j = 0; j < 8; j++) subSums[j] = (short)(sums16[2 * j] + sums16[2 * j + 1]);
        }
    }

    /// <summary>Repacks 8 Q4_K rows (see <see cref="Q4KGroupBlockBytes"/> for the layout).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RepackQ4_K(byte* w, long rowBytes, long superBlocks, byte* dst)
    {
        var lowMask = Vector256.Create((byte)0xF);
        byte* sm = stackalloc byte[16];
        for (long b = 0; b < superBlocks; b++, dst += Q4KGroupBlockBytes)
        {
            short* scales = (short*)(dst + Q4KScalesAt);
            short* mins = (short*)(dst + Q4KMinsAt);
            for (int r = 0; r < GroupRows; r++)
            {
                byte* block = w + r * rowBytes + b * Q4_KBytes;
                ((float*)(dst + Q4KDAt))[r] = HalfConversion.Load(block);
                ((float*)(dst + Q4KDminAt))[r] = HalfConversion.Load(block + 2);
                QuantDot.UnpackScaleMinsBytes(block + 4, sm);
                for (int j = 0; j < 8; j++)
                {
                    scales[16 * j + 2 * r] = scales[16 * j + 2 * r + 1] = sm[j];
                    mins[16 * (j / 2) + 2 * r + (j & 1)] = sm[8 + j];
                }
                for (int c = 0; c < 4; c++)
                {
                    var q = Vector256.Load(block + 16 + 32 * c);
                    StoreChunks((q & lowMask).AsUInt32(), (uint*)(dst + 256 * (2 * c)) + r);
                    StoreChunks((Vector256.ShiftRightLogical(q, 4)).AsUInt32(), (uint*)(dst + 256 * (2 * c + 1)) + r);
                }
            }
        }
    }

    /// <summary>Scatters 8 dwords (4 elements each) of one row to the row's lane in 8 consecutive 32-byte chunks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreChunks(Vector256<uint> values, uint* lane)
    {
        lane[0] = values.GetElement(0); lane[8] = values.GetElement(1); lane[16] = values.GetElement(2); lane[24] = values.GetElement(3);
        lane[32] = values.GetElement(4); lane[40] = values.GetElement(5); lane[48] = values.GetElement(6); lane[56] = values.GetElement(7);
    }

    /// <summary>One sub-block (8 chunks) for four tokens: int16 sums, then scaled by the rows' sub-block scales into int32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void SubBlock4(byte* sub, Vector256<short> scale, byte* x0, byte* x1, byte* x2, byte* x3,
                                  ref Vector256<int> i0, ref Vector256<int> i1, ref Vector256<int> i2, ref Vector256<int> i3)
    {
        Vector256<short> s0 = default, s1 = default, s2 = default, s3 = default;
        Chunk4(sub, 0, x0 - 2, x1 - 2, x2 - 2, x3 - 2, ref s0, ref s1, ref s2, ref s3);
        Chunk4(sub, 1, x0 - 2, x1 - 2, x2 - 2, x3 - 2, ref s0, ref s1, ref s2, ref s3);
        Chunk4(sub, 2, x0 - 2, x1 - 2, x2 - 2, x3 - 2, ref s0, ref s1, ref s2, ref s3);
        Chunk4(sub, 3, x0 - 2, x1 - 2, x2 - 2, x3 - 2, ref s0, ref s1, ref s2, ref s3);
        Chunk4(sub, 4, x0 - 2, x1 - 2, x2 - 2, x3 - 2, ref s0, ref s1, ref s2, ref s3);
        Chunk4(sub, 5, x0 - 2, x1 - 2, x2 - 2, x3 - 2, ref s0, ref s1, ref s2, ref s3);
        Chunk4(sub, 6, x0 - 2, x1 - 2, x2 - 2, x3 - 2, ref s0, ref s1, ref s2, ref s3);
        Chunk4(sub, 7, x0 - 2, x1 - 2, x2 - 2, x3 - 2, ref s0, ref s1, ref s2, ref s3);
        i0 += Avx2.MultiplyAddAdjacent(s0, scale);
        i1 += Avx2.MultiplyAddAdjacent(s1, scale);
        i2 += Avx2.MultiplyAddAdjacent(s2, scale);
        i3 += Avx2.MultiplyAddAdjacent(s3, scale);
    }

    /// <summary>Σ_j m_r,j · S_j for one token as int32 per row (four vpmaddwd over pairs of sub-blocks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> MinSums(byte* group, short* subSums)
    {
        var m = (short*)(group + Q4KMinsAt);
        int* pairs = (int*)subSums;
        return Avx2.MultiplyAddAdjacent(Vector256.Load(m), Vector256.Create(pairs[0]).AsInt16())
             + Avx2.MultiplyAddAdjacent(Vector256.Load(m + 16), Vector256.Create(pairs[1]).AsInt16())
             + Avx2.MultiplyAddAdjacent(Vector256.Load(m + 32), Vector256.Create(pairs[2]).AsInt16())
             + Avx2.MultiplyAddAdjacent(Vector256.Load(m + 48), Vector256.Create(pairs[3]).AsInt16());
    }

    /// <summary>Finishes one Q4_K super-block for one token: dx·(d·Σ sc·Σq·x − dmin·Σ m·S), accumulated per row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> FinishQ4K(byte* group, Vector256<int> sumi, short* subSums, float dx, Vector256<float> acc)
    {
        var scale = Vector256.Create(dx);
        acc = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Load((float*)(group + Q4KDAt)) * scale, acc);
        return Fma.MultiplyAddNegated(Avx.ConvertToVector256Single(MinSums(group, subSums)), Vector256.Load((float*)(group + Q4KDminAt)) * scale, acc);
    }

    /// <summary>Four tokens against one repacked Q4_K group. Token t's Q8_K row is at <c>act + t * actRowBytes</c>; its scales at
    /// <c>scales + t * superBlocks</c> and sub-block sums at <c>subSums + 8 * t * superBlocks</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q4_KTokens4(byte* group, long superBlocks, byte* act, long actRowBytes, float* scales, void* terms, float* y, long yStride)
    {
        short* subSums = (short*)terms;
        byte* x0 = act + 4, x1 = act + actRowBytes + 4, x2 = act + 2 * actRowBytes + 4, x3 = act + 3 * actRowBytes + 4;
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        for (long b = 0; b < superBlocks; b++, group += Q4KGroupBlockBytes, x0 += Q8_KBytes, x1 += Q8_KBytes, x2 += Q8_KBytes, x3 += Q8_KBytes)
        {
            Vector256<int> i0 = default, i1 = default, i2 = default, i3 = default;
            short* sc = (short*)(group + Q4KScalesAt);
            for (int j = 0; j < 8; j++)
                SubBlock4(group + 256 * j, Vector256.Load(sc + 16 * j), x0 + 32 * j, x1 + 32 * j, x2 + 32 * j, x3 + 32 * j, ref i0, ref i1, ref i2, ref i3);
            c0 = FinishQ4K(group, i0, subSums + 8 * b, scales[b], c0);
            c1 = FinishQ4K(group, i1, subSums + 8 * (superBlocks + b), scales[superBlocks + b], c1);
            c2 = FinishQ4K(group, i2, subSums + 8 * (2 * superBlocks + b), scales[2 * superBlocks + b], c2);
            c3 = FinishQ4K(group, i3, subSums + 8 * (3 * superBlocks + b), scales[3 * superBlocks + b], c3);
        }
        c0.Store(y); c1.Store(y + yStride); c2.Store(y + 2 * yStride); c3.Store(y + 3 * yStride);
    }

    /// <summary>One token against one repacked Q4_K group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q4_KTokens1(byte* group, long superBlocks, byte* act, float* scales, void* terms, float* y)
    {
        short* subSums = (short*)terms;
        byte* x = act + 4;
        Vector256<float> c = default;
        for (long b = 0; b < superBlocks; b++, group += Q4KGroupBlockBytes, x += Q8_KBytes)
        {
            Vector256<int> i = default;
            short* sc = (short*)(group + Q4KScalesAt);
            for (int j = 0; j < 8; j++)
            {
                i += Avx2.MultiplyAddAdjacent(Chunks8(group + 256 * j, x + 32 * j - 2), Vector256.Load(sc + 16 * j));
            }
            c = FinishQ4K(group, i, subSums + 8 * b, scales[b], c);
        }
        c.Store(y);
    }

    // ---------------------------------------------------------------- Q6_K (256-element super-blocks, Q8_K activations)

    /// <summary>
    /// Bytes of one repacked 8-row Q6_K super-block: 16 sub-blocks × 4 chunks × 32 bytes of the unsigned 6-bit values q (0..63),
    /// then per sub-block the rows' int8 scales as int16 pairs (s_r, s_r), then for the −32 offset the scales as pairs
    /// (s_r,2p, s_r,2p+1) for p = 0..7, then d of the 8 rows as floats. vpmaddubsw pair sums reach 2·63·127, so a row's int16
    /// lane holds at most two chunks (4 products ≤ 32004) before vpmaddwd applies the sub-block scale.
    /// </summary>
    public const int Q6KGroupBlockBytes = 16 * 128 + 16 * 32 + 8 * 32 + 8 * sizeof(float);
    private const int Q6KScalesAt = 2048, Q6KOffsetScalesAt = 2048 + 512, Q6KDAt = 2048 + 512 + 256;
    private const int Q6_KBytes = 210;

    /// <summary>Repacks 8 Q6_K rows (see <see cref="Q6KGroupBlockBytes"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void RepackQ6_K(byte* w, long rowBytes, long superBlocks, byte* dst)
    {
        for (long b = 0; b < superBlocks; b++, dst += Q6KGroupBlockBytes)
        {
            short* scales = (short*)(dst + Q6KScalesAt);
            short* offsetScales = (short*)(dst + Q6KOffsetScalesAt);
            for (int r = 0; r < GroupRows; r++)
            {
                byte* block = w + r * rowBytes + b * Q6_KBytes;
                ((float*)(dst + Q6KDAt))[r] = HalfConversion.Load(block + 208);
                sbyte* sc = (sbyte*)block + 192;
                for (int i = 0; i < 16; i++)
                {
                    scales[16 * i + 2 * r] = scales[16 * i + 2 * r + 1] = sc[i];
                    offsetScales[16 * (i / 2) + 2 * r + (i & 1)] = sc[i];
                }
                for (int h = 0; h < 2; h++)
                {
                    // Elements 128h + 32g .. +31 are group g of this half: 8 chunks of 4, i.e. chunks 32h + 8g .. +7.
                    QuantDot.Q6Half(block, h, out var q0, out var q1, out var q2, out var q3);
                    StoreChunks(q0.AsUInt32(), (uint*)(dst + 32 * (32 * h + 0)) + r);
                    StoreChunks(q1.AsUInt32(), (uint*)(dst + 32 * (32 * h + 8)) + r);
                    StoreChunks(q2.AsUInt32(), (uint*)(dst + 32 * (32 * h + 16)) + r);
                    StoreChunks(q3.AsUInt32(), (uint*)(dst + 32 * (32 * h + 24)) + r);
                }
            }
        }
    }

    /// <summary>Two chunks (8 elements) of one token, int16 pair sums (≤ 4 · 63 · 127 per lane).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<short> Chunks2(byte* chunks, byte* x)
        => Avx2.MultiplyAddAdjacent(Vector256.Load(chunks), Vector256.Create(Unsafe.ReadUnaligned<int>(x)).AsSByte())
         + Avx2.MultiplyAddAdjacent(Vector256.Load(chunks + 32), Vector256.Create(Unsafe.ReadUnaligned<int>(x + 4)).AsSByte());

    /// <summary>Σ_i s_r,i · S_i (S_i = Σq over 16-element sub-block i, the activation's own sums) for one token, int32 per row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Q6OffsetSums(byte* group, byte* act)
    {
        var sc = (short*)(group + Q6KOffsetScalesAt);
        int* pairs = (int*)(act + Q8KSums);
        var sum = Avx2.MultiplyAddAdjacent(Vector256.Load(sc), Vector256.Create(pairs[0]).AsInt16());
        for (int p = 1; p < 8; p++) sum += Avx2.MultiplyAddAdjacent(Vector256.Load(sc + 16 * p), Vector256.Create(pairs[p]).AsInt16());
        return sum;
    }

    /// <summary>One token against one repacked Q6_K super-block: Σ_i s_i·(Σ q·x − 32·S_i), scaled by d·dx and accumulated.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Q6KSuperBlock(byte* group, byte* act, Vector256<float> acc)
    {
        byte* x = act + 4;
        var scales = (short*)(group + Q6KScalesAt);
        Vector256<int> sumi = default;
        for (int i = 0; i < 16; i++)
        {
            var scale = Vector256.Load(scales + 16 * i);
            byte* chunks = group + 128 * i;
            sumi += Avx2.MultiplyAddAdjacent(Chunks2(chunks, x + 16 * i), scale)
                  + Avx2.MultiplyAddAdjacent(Chunks2(chunks + 64, x + 16 * i + 8), scale);
        }
        sumi -= Avx2.ShiftLeftLogical(Q6OffsetSums(group, act), 5);
        float dx = Unsafe.ReadUnaligned<float>(act);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sumi), Vector256.Load((float*)(group + Q6KDAt)) * Vector256.Create(dx), acc);
    }

    /// <summary>Two tokens against one repacked Q6_K group (the weight chunks are read from L1 once per token; two tokens
    /// interleave two independent chains). Q6_K reads its activation's own scale and sums: <paramref name="scales"/> and
    /// <paramref name="terms"/> are unused.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q6_KTokens2(byte* group, long superBlocks, byte* act, long actRowBytes, float* scales, void* terms, float* y, long yStride)
    {
        byte* x0 = act, x1 = act + actRowBytes;
        Vector256<float> c0 = default, c1 = default;
        for (long b = 0; b < superBlocks; b++, group += Q6KGroupBlockBytes, x0 += Q8_KBytes, x1 += Q8_KBytes)
        {
            c0 = Q6KSuperBlock(group, x0, c0);
            c1 = Q6KSuperBlock(group, x1, c1);
        }
        c0.Store(y); c1.Store(y + yStride);
    }

    /// <summary>One token against one repacked Q6_K group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Q6_KTokens1(byte* group, long superBlocks, byte* act, float* scales, void* terms, float* y)
    {
        Vector256<float> c = default;
        for (long b = 0; b < superBlocks; b++, group += Q6KGroupBlockBytes, act += Q8_KBytes) c = Q6KSuperBlock(group, act, c);
        c.Store(y);
    }

    /// <summary>
    /// The parallel sweep: claims are groups of 8 rows (repacked into the worker's buffer, then run against every token);
    /// a last claim covers rows left over after whole groups with the per-row kernel.
    /// </summary>
    internal sealed class Job : CpuParallelJob
    {
        private TypeKernels _kernels;
        private byte* _w, _act, _terms, _packed;
        private float* _y, _scales;
        private byte*[] _workerBuffers = [];
        private delegate*<byte*, void*, long, float> _dot;
        private long _rowBytes, _rows, _cols, _blocks, _actRowBytes, _n, _groups, _claims, _next, _groupBytes, _groupsPerClaim, _groupClaims;

        /// <param name="scales">Per token and block: the activation scale as a float (<c>n × blocks</c>).</param>
        /// <param name="terms">Per token and block: <see cref="TypeKernels.TermBytes"/> bytes (see <see cref="PrepareActivation"/>).</param>
        public void Set(GgmlType weightType, byte* w, long rowBytes, long rows, long cols, byte* act, long actRowBytes, float* scales, byte* terms,
                        long n, float* y, byte*[] workerBuffers, delegate*<byte*, void*, long, float> dot)
        {
            _kernels = KernelsFor(weightType); _w = w; _rowBytes = rowBytes; _rows = rows; _cols = cols; _blocks = cols / BlockElementsFor(weightType);
            _act = act; _actRowBytes = actRowBytes; _scales = scales; _terms = terms; _n = n; _y = y;
            _workerBuffers = workerBuffers; _dot = dot;
            _groups = rows / GroupRows;
            _claims = _groups + (rows % GroupRows != 0 ? 1 : 0);
            _packed = null;
            _next = 0;
        }

        /// <summary>The sweep over weights kept repacked (<paramref name="packed"/>, made from <paramref name="w"/>): no repack, and
        /// claims of several consecutive groups, so that each claim is one sequential stream and the claim counter is not touched
        /// every 8 rows (with one or a few tokens a group takes well under a microsecond, about what a contended atomic
        /// increment costs). Rows after the last whole group come from <paramref name="w"/>.</summary>
        public void SetPacked(RepackedWeights packed, byte* w, long rowBytes, byte* act, long actRowBytes, float* scales, byte* terms,
                              long n, float* y, delegate*<byte*, void*, long, float> dot, int threads)
        {
            _kernels = KernelsFor(packed.Type); _w = w; _rowBytes = rowBytes; _rows = packed.Rows; _cols = packed.Cols;
            _blocks = packed.Cols / BlockElementsFor(packed.Type);
            _act = act; _actRowBytes = actRowBytes; _scales = scales; _terms = terms; _n = n; _y = y;
            _workerBuffers = []; _dot = dot;
            _packed = packed.Data; _groupBytes = packed.GroupBytes;
            _groups = _rows / GroupRows;
            // About four claims per thread (balance when a thread is held up), each at most 64 groups of one token (fewer with
            // more tokens: the claim's work stays about the same), at least one group.
            _groupsPerClaim = Math.Clamp(_groups / (4L * threads), 1, Math.Max(1, 64 / n));
            _groupClaims = (_groups + _groupsPerClaim - 1) / _groupsPerClaim;
            _claims = _groupClaims + (_rows % GroupRows != 0 ? 1 : 0);
            _next = 0;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Execute(int worker, int workerCount)
        {
            if (_packed != null)
            {
                ExecutePacked();
                return;
            }
            byte* buffer = _workerBuffers[worker];
            var k = _kernels;
            long blocks = _blocks, termStride = blocks * k.TermBytes, claim;
            while ((claim = Interlocked.Increment(ref _next) - 1) < _claims)
            {
                long r0 = claim * GroupRows;
                if (claim == _groups)
                {
                    for (long r = r0; r < _rows; r++)
                        for (long t = 0; t < _n; t++)
                            _y[t * _rows + r] = _dot(_w + r * _rowBytes, _act + t * _actRowBytes, _cols);
                    continue;
                }
                // A group's 8 rows are one contiguous span that the repack walks as 8 short streams, which the hardware prefetcher
                // does not follow. So the span is requested whole: this group's when it was not requested before (the first claim),
                // and, once it is repacked, the group this worker will probably claim next (claims go round the workers), whose
                // reads then overlap this group's arithmetic.
                byte* rows = _w + r0 * _rowBytes;
                long span = GroupRows * _rowBytes;
                if (claim < workerCount) QuantDot.PrefetchSpan(rows, span);
                k.Repack(rows, _rowBytes, blocks, buffer);
                if (claim + workerCount < _groups) QuantDot.PrefetchSpan(rows + workerCount * span, span);
                GroupTokens(buffer, _y + r0);
            }
        }

        /// <summary>Every token against one repacked group whose outputs start at <paramref name="y"/> (row r0 of token 0).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void GroupTokens(byte* group, float* y)
        {
            var k = _kernels;
            long blocks = _blocks, termStride = blocks * k.TermBytes, t0 = 0;
            for (; t0 + k.Width <= _n; t0 += k.Width)
                k.Tokens(group, blocks, _act + t0 * _actRowBytes, _actRowBytes, _scales + t0 * blocks, _terms + t0 * termStride, y + t0 * _rows, _rows);
            for (; t0 < _n; t0++)
                k.Token(group, blocks, _act + t0 * _actRowBytes, _scales + t0 * blocks, _terms + t0 * termStride, y + t0 * _rows);
        }

        /// <summary>The sweep over weights kept repacked: Q4_0 only (<see cref="RepackedWeights.Supports(GgmlType, long, long)"/>).</summary>
        private void ExecutePacked()
        {
            long claim;
            while ((claim = Interlocked.Increment(ref _next) - 1) < _claims)
            {
                if (claim == _groupClaims)
                {
                    for (long r = _groups * GroupRows; r < _rows; r++)
                        for (long t = 0; t < _n; t++)
                            _y[t * _rows + r] = _dot(_w + r * _rowBytes, _act + t * _actRowBytes, _cols);
                    continue;
                }
                long g0 = claim * _groupsPerClaim, g1 = Math.Min(g0 + _groupsPerClaim, _groups);
                for (long g = g0; g < g1; g++)
                    Q4_0GroupSliced(_packed + g * _groupBytes, _blocks, _act, _actRowBytes, _scales, (int*)_terms, _n, _y + g * GroupRows, _rows);
            }
        }
    }
}

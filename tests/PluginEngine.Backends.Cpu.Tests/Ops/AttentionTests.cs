using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// Causal GQA attention against a naive double-precision reference (nHead 8, nKvHead 2, headDim 64).
/// For the F16 cache the reference reads the same half values, and for the Q8_0 and Q4_0 caches the values the same
/// quantized bytes decode to (the core's scalar reference decoder), so every cache type shares one tolerance:
/// 2e-6 absolute + 1e-5 relative (float dot products of 64 terms and a float softmax).
/// </summary>
public unsafe class AttentionTests
{
    private const int NHead = 8, NKvHead = 2, HeadDim = 64;

    public static TheoryData<KvCacheType, int, int> Batches => new()
    {
        { KvCacheType.F32, 1, 0 },    // first token of a prompt
        { KvCacheType.F32, 1, 37 },   // generation step
        { KvCacheType.F32, 5, 0 },    // prompt batch
        { KvCacheType.F32, 7, 20 },   // later prompt chunk
        { KvCacheType.F16, 1, 0 },
        { KvCacheType.F16, 1, 37 },
        { KvCacheType.F16, 5, 0 },
        { KvCacheType.F16, 7, 20 },
        { KvCacheType.Q8_0, 1, 0 },
        { KvCacheType.Q8_0, 1, 37 },
        { KvCacheType.Q8_0, 5, 0 },
        { KvCacheType.Q8_0, 7, 20 },
        { KvCacheType.Q4_0, 1, 0 },
        { KvCacheType.Q4_0, 1, 37 },
        { KvCacheType.Q4_0, 5, 0 },
        { KvCacheType.Q4_0, 7, 20 },
    };

    [Theory, MemberData(nameof(Batches))]
    public void Matches_naive_reference(KvCacheType type, int nTokens, int firstPos)
        => RunAndCompare(type, nTokens, firstPos, kvRowStride: NKvHead * HeadDim, headStart: 0, headEnd: NHead);

    [Theory]
    [InlineData(KvCacheType.F32)]
    [InlineData(KvCacheType.F16)]
    [InlineData(KvCacheType.Q8_0)]
    [InlineData(KvCacheType.Q4_0)]
    public void Padded_cache_rows_and_a_head_range_write_only_those_heads(KvCacheType type)
        // A quantized row holds whole blocks, so its padding is a block.
        => RunAndCompare(type, nTokens: 3, firstPos: 10, kvRowStride: NKvHead * HeadDim + (Attention.IsQuantized(type) ? 32 : 24), headStart: 3, headEnd: 6);

    [Fact]
    public void Single_visible_position_returns_its_value_row()
    {
        // At position 0 the only key gets weight 1, so the output is exactly v[0][kvHead].
        var q = TestData.Uniform(NHead * HeadDim, 51);
        var k = TestData.Uniform(NKvHead * HeadDim, 52);
        var v = TestData.Uniform(NKvHead * HeadDim, 53);
        var output = new float[NHead * HeadDim];
        var scratch = new float[1];
        fixed (float* pq = q, pk = k, pv = v, po = output, ps = scratch)
            Attention.Compute(pq, pk, pv, KvCacheType.F32, po, 1, 0, NHead, NKvHead, HeadDim, NKvHead * HeadDim, 0, NHead, ps);
        for (int h = 0; h < NHead; h++)
            Assert.Equal(v.AsSpan(h / 4 * HeadDim, HeadDim).ToArray(), output.AsSpan(h * HeadDim, HeadDim).ToArray());
    }

    [Fact]
    public void An_explicit_scale_is_used_instead_of_one_over_sqrt_head_size()
    {
        // scale·(q·k) with scale = 0.3/sqrt(d) must equal the default scale applied to 0.3·q.
        const int nTokens = 3, firstPos = 4, visible = firstPos + nTokens;
        var q = TestData.Uniform(nTokens * NHead * HeadDim, 61);
        var k = TestData.Uniform(visible * NKvHead * HeadDim, 62);
        var v = TestData.Uniform(visible * NKvHead * HeadDim, 63);
        var qScaled = q.Select(x => x * 0.3f).ToArray();
        var explicitOut = new float[q.Length];
        var defaultOut = new float[q.Length];
        var scratch = new float[Attention.ScratchLength(nTokens, firstPos)];
        fixed (float* pq = q, pqs = qScaled, pk = k, pv = v, pe = explicitOut, pd = defaultOut, ps = scratch)
        {
            Attention.Compute(pq, pk, pv, KvCacheType.F32, pe, nTokens, firstPos, NHead, NKvHead, HeadDim, NKvHead * HeadDim, 0, NHead, ps,
                scale: 0.3f / MathF.Sqrt(HeadDim));
            Attention.Compute(pqs, pk, pv, KvCacheType.F32, pd, nTokens, firstPos, NHead, NKvHead, HeadDim, NKvHead * HeadDim, 0, NHead, ps);
        }
        for (int i = 0; i < q.Length; i++) Assert.Equal(defaultOut[i], explicitOut[i], 1e-5f);
        // And the scale really changes the result (a test that cannot fail would prove nothing).
        var unscaled = new float[q.Length];
        fixed (float* pq = q, pk = k, pv = v, pu = unscaled, ps = scratch)
            Attention.Compute(pq, pk, pv, KvCacheType.F32, pu, nTokens, firstPos, NHead, NKvHead, HeadDim, NKvHead * HeadDim, 0, NHead, ps);
        Assert.True(unscaled.Zip(explicitOut).Max(p => Math.Abs(p.First - p.Second)) > 1e-3f);
    }

    [Fact]
    public void Head_count_not_a_multiple_of_kv_heads_is_rejected()
    {
        var ex = Assert.Throws<ArgumentException>(() =>
        {
            fixed (float* p = new float[1024])
                Attention.Compute(p, p, p, KvCacheType.F32, p, 1, 0, 6, 4, 8, 32, 0, 6, p);
        });
        Assert.Contains("multiple", ex.Message);
    }

    /// <summary>
    /// A cache of <paramref name="type"/> holding <paramref name="x"/> (row after row, as the CPU queue's Convert stores it):
    /// its bytes, and the values those bytes hold, which is what a reference must read. Q8_0 and Q4_0 are quantized by the
    /// backend's <see cref="CacheQuantizer"/> and decoded by the core's scalar reference <c>Dequantizer</c>.
    /// </summary>
    internal static (byte[] Bytes, float[] Values) Cache(KvCacheType type, float[] x)
    {
        switch (type)
        {
            case KvCacheType.F32: return (MemoryMarshal.AsBytes(x.AsSpan()).ToArray(), x);
            case KvCacheType.F16:
                var halves = x.Select(f => (Half)f).ToArray();
                return (MemoryMarshal.AsBytes(halves.AsSpan()).ToArray(), halves.Select(h => (float)h).ToArray());
            default:
                var ggml = type == KvCacheType.Q8_0 ? GgmlType.Q8_0 : GgmlType.Q4_0;
                var bytes = new byte[GgmlTypes.RowSize(ggml, x.Length)];
                fixed (float* px = x)
                fixed (byte* pb = bytes)
                    CacheQuantizer.Quantize(ggml, px, pb, x.Length);
                return (bytes, TestData.Dequantize(ggml, bytes, x.Length));
        }
    }

    private static void RunAndCompare(KvCacheType type, int nTokens, int firstPos, int kvRowStride, int headStart, int headEnd)
    {
        int nPositions = firstPos + nTokens;
        var q = TestData.Uniform(nTokens * NHead * HeadDim, 41, -2, 2);
        var (kBytes, k) = Cache(type, TestData.Uniform(nPositions * kvRowStride, 42, -2, 2));
        var (vBytes, v) = Cache(type, TestData.Uniform(nPositions * kvRowStride, 43, -1, 1));
        var expected = Reference(q, k, v, nTokens, firstPos, kvRowStride);

        var output = Enumerable.Repeat(float.NaN, q.Length).ToArray(); // heads outside the range must stay NaN
        var scratch = new float[Attention.ScratchLength(nTokens, firstPos)];
        fixed (float* pq = q, po = output, ps = scratch)
        fixed (byte* pk = kBytes, pv = vBytes)
            Attention.Compute(pq, pk, pv, type, po, nTokens, firstPos, NHead, NKvHead, HeadDim, kvRowStride, headStart, headEnd, ps);

        var staged = RunStaged(type, q, kBytes, vBytes, NHead, NKvHead, HeadDim, nTokens, firstPos, kvRowStride, headStart, headEnd);
        for (int i = 0; i < output.Length; i++)
        {
            int head = i / HeadDim % NHead;
            if (head >= headStart && head < headEnd)
            {
                TestData.Close(expected[i], output[i], 1e-5, 2e-6, $"attention {type}", i);
                TestData.Close(expected[i], staged[i], 1e-5, 2e-6, $"staged attention {type}", i);
            }
            else
            {
                Assert.True(float.IsNaN(output[i]), $"element {i} of head {head} outside [{headStart}, {headEnd}) was written");
                Assert.True(float.IsNaN(staged[i]), $"staged: element {i} of head {head} outside [{headStart}, {headEnd}) was written");
            }
        }
    }

    /// <summary>
    /// <see cref="StagedAttention"/> as the CPU queue runs it: keys and values staged per KV head in two position chunks (so a
    /// chunk boundary falls inside the block of 32), the tail cleared, then heads [headStart, headEnd) computed. Returns the
    /// output with every other element NaN. <paramref name="k"/>/<paramref name="v"/> are the caches' bytes (<see cref="Cache"/>).
    /// </summary>
    internal static float[] RunStaged(KvCacheType type, float[] q, byte[] k, byte[] v, int nHead, int nKvHead, int headDim,
                                      int nTokens, int firstPos, int kvRowStride, int headStart, int headEnd)
    {
        int visible = firstPos + nTokens, capacity = StagedAttention.Capacity(nTokens, firstPos);
        long length = StagedAttention.StageLength(nKvHead, headDim, capacity);
        var keysT = Enumerable.Repeat(float.NaN, (int)length).ToArray(); // anything not staged or cleared would poison scores
        var values = new float[length];
        var scores = new float[StagedAttention.ScoresLength(capacity)];
        var output = Enumerable.Repeat(float.NaN, q.Length).ToArray();
        fixed (float* pq = q, pkt = keysT, pvals = values, ps = scores, po = output)
        fixed (byte* kCache = k, vCache = v)
        {
            int split = visible / 2;
            for (int g = 0; g < nKvHead; g++)
            {
                StagedAttention.StageKv(kCache, vCache, type, g, split, visible, headDim, kvRowStride, pkt, pvals, capacity);
                StagedAttention.StageKv(kCache, vCache, type, g, 0, split, headDim, kvRowStride, pkt, pvals, capacity);
                StagedAttention.ClearTail(g, visible, headDim, pkt, capacity);
            }
            for (int h = headStart; h < headEnd; h++)
                StagedAttention.ComputeHead(pq, pkt, pvals, capacity, po, 0, nTokens, firstPos, nHead, nKvHead, headDim, h, ps, 1f / MathF.Sqrt(headDim));
        }
        return output;
    }

    [Theory]
    [InlineData(KvCacheType.F32, 12, 1, 44)]  // head size not a multiple of 8, visible positions cross a block of 32
    [InlineData(KvCacheType.F16, 12, 3, 30)]
    [InlineData(KvCacheType.F16, 5, 9, 0)]
    [InlineData(KvCacheType.Q8_0, 32, 3, 30)] // a quantized cache: heads of one block, three KV heads per row
    [InlineData(KvCacheType.Q4_0, 32, 9, 0)]
    [InlineData(KvCacheType.Q8_0, 96, 1, 70)]  // heads of three blocks
    [InlineData(KvCacheType.Q4_0, 96, 2, 33)]
    public void Staged_attention_matches_the_per_head_kernel_for_odd_shapes(KvCacheType type, int headDim, int nTokens, int firstPos)
    {
        const int nHead = 6, nKvHead = 3;
        int kvRowStride = nKvHead * headDim, nPositions = firstPos + nTokens;
        var q = TestData.Uniform(nTokens * nHead * headDim, 51, -2, 2);
        var (k, _) = Cache(type, TestData.Uniform(nPositions * kvRowStride, 52, -2, 2));
        var (v, _) = Cache(type, TestData.Uniform(nPositions * kvRowStride, 53, -1, 1));
        var expected = new float[q.Length];
        var scratch = new float[Attention.ScratchLength(nTokens, firstPos)];
        fixed (float* pq = q, pe = expected, ps = scratch)
        fixed (byte* pk = k, pv = v)
            Attention.Compute(pq, pk, pv, type, pe, nTokens, firstPos, nHead, nKvHead, headDim, kvRowStride, 0, nHead, ps);
        var staged = RunStaged(type, q, k, v, nHead, nKvHead, headDim, nTokens, firstPos, kvRowStride, 0, nHead);
        for (int i = 0; i < q.Length; i++) TestData.Close(expected[i], staged[i], 1e-5, 2e-6, $"staged attention {type} head size {headDim}", i);
    }

    [Theory]
    [InlineData(KvCacheType.F32, 8, 8, 1, 0)]    // the first token: one visible position
    [InlineData(KvCacheType.F32, 40, 6, 3, 31)]  // head size a multiple of 8 but not of 32; exactly one tile
    [InlineData(KvCacheType.F16, 64, 8, 2, 32)]  // one position past a tile
    [InlineData(KvCacheType.F16, 64, 32, 4, 99)] // TinyLlama's grouping (8 query heads a KV head)
    [InlineData(KvCacheType.F16, 128, 3, 3, 70)] // no grouping (7B)
    [InlineData(KvCacheType.Q8_0, 64, 8, 2, 100)]
    [InlineData(KvCacheType.Q8_0, 96, 6, 2, 64)] // three query heads a group: the odd one alone
    [InlineData(KvCacheType.Q4_0, 64, 8, 1, 45)]
    [InlineData(KvCacheType.Q4_0, 32, 4, 4, 130)]
    public void Decoding_by_kv_head_gives_the_staged_bits(KvCacheType type, int headDim, int nHead, int nKvHead, int firstPos)
    {
        // A one-token step through StagedAttention.DecodeKvHead (what the CPU queue runs for decode steps) against the staged
        // passes (what it runs for prompts): bit for bit, so a token's logits do not depend on which path its batch took.
        Assert.SkipUnless(StagedAttention.DecodesByKvHead(headDim), "DecodeKvHead needs AVX here");
        int kvRowStride = nKvHead * headDim, visible = firstPos + 1, group = nHead / nKvHead;
        var q = TestData.Uniform(nHead * headDim, 61, -2, 2);
        var (k, _) = Cache(type, TestData.Uniform(visible * kvRowStride, 62, -2, 2));
        var (v, _) = Cache(type, TestData.Uniform(visible * kvRowStride, 63, -1, 1));
        var staged = RunStaged(type, q, k, v, nHead, nKvHead, headDim, 1, firstPos, kvRowStride, 0, nHead);

        int capacity = StagedAttention.Capacity(1, firstPos);
        var scratch = Enumerable.Repeat(float.NaN, (int)StagedAttention.DecodeScratchLength(group, headDim, capacity)).ToArray();
        var output = Enumerable.Repeat(float.NaN, q.Length).ToArray();
        fixed (float* pq = q, po = output, ps = scratch)
        fixed (byte* pk = k, pv = v)
            for (int g = nKvHead - 1; g >= 0; g--) // any order: each KV head writes only its group's rows
                StagedAttention.DecodeKvHead(pq, pk, pv, type, kvRowStride, g, group, headDim, visible, capacity, po, ps, 1f / MathF.Sqrt(headDim));
        for (int i = 0; i < q.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(staged[i]) == BitConverter.SingleToInt32Bits(output[i]),
                $"{type} head size {headDim}, {nHead}/{nKvHead} heads, position {firstPos}: element {i} is {output[i]:R}, staged {staged[i]:R}");
    }

    [Theory]
    [InlineData(KvCacheType.Q8_0, 48)]
    [InlineData(KvCacheType.Q4_0, 16)]
    public void A_quantized_cache_refuses_heads_that_are_not_whole_blocks(KvCacheType type, int headDim)
    {
        var e = Assert.Throws<ArgumentException>(() =>
        {
            fixed (float* p = new float[4096])
                Attention.Compute(p, p, p, type, p, 1, 0, 2, 2, headDim, 2 * headDim, 0, 2, p);
        });
        Assert.Contains("multiples of 32", e.Message);
        e = Assert.Throws<ArgumentException>(() =>
        {
            fixed (float* p = new float[4096])
                StagedAttention.StageKv(p, p, type, 0, 0, 1, headDim, 2 * headDim, p, p, 32);
        });
        Assert.Contains($"head size {headDim}", e.Message);
    }

    private static double[] Reference(float[] q, float[] k, float[] v, int nTokens, int firstPos, int kvRowStride)
    {
        var output = new double[q.Length];
        int group = NHead / NKvHead;
        for (int t = 0; t < nTokens; t++)
            for (int h = 0; h < NHead; h++)
            {
                int qRow = (t * NHead + h) * HeadDim;
                int kvHead = h / group;
                int visible = firstPos + t + 1;
                var scores = new double[visible];
                for (int j = 0; j < visible; j++)
                {
                    double dot = 0;
                    for (int d = 0; d < HeadDim; d++) dot += (double)q[qRow + d] * k[j * kvRowStride + kvHead * HeadDim + d];
                    scores[j] = dot / Math.Sqrt(HeadDim);
                }
                double max = scores.Max(), sum = 0;
                for (int j = 0; j < visible; j++) sum += scores[j] = Math.Exp(scores[j] - max);
                for (int d = 0; d < HeadDim; d++)
                {
                    double acc = 0;
                    for (int j = 0; j < visible; j++) acc += scores[j] / sum * v[j * kvRowStride + kvHead * HeadDim + d];
                    output[qRow + d] = acc;
                }
            }
        return output;
    }
}

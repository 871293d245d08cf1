using PluginEngine.Abstractions;
using PluginEngine.Core.Quantization;
using Xunit;
using static PluginEngine.Conformance.ConformanceBackends;

namespace PluginEngine.Conformance;

/// <summary>
/// Every <see cref="ComputeOp"/> × relevant types on the backend under test, compared with the CPU reference.
/// Sizes are deliberately odd (rows not a multiple of 512, odd row counts, batches of 1 and more than one tile).
/// Tolerances are relative to the reference's RMS; the CPU quantizes activations to 8 bits for quantized matmuls,
/// which is most of the quantized-matmul tolerance.
/// </summary>
public abstract class OpConformanceTests
{
    public static readonly GgmlType[] WeightTypes = [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];

    public static TheoryData<string, GgmlType, int, int, int> MatMulCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, int, int, int>();
            foreach (string backend in Candidates)
                foreach (var type in WeightTypes)
                {
                    bool kQuant = GgmlTypes.Get(type).BlockSize == 256;
                    // Row lengths: one not a multiple of 512 (slide), one just past a multiple; batch 1 (mat-vec), 3, 11 (> one 8-token
                    // tile) and 20 (> one 16-token tile: CUDA's int8 mma kernels take 16 or 32 tokens per pass), and 40: a prompt-sized
                    // batch (GPU backends switch to a GEMM library there, e.g. CUDA's cuBLAS from 32 tokens).
                    // Q4_0/Q8_0 also 768, a multiple of 256 (not of 512): 16-byte aligned rows, which a GPU may hold in a layout of its own.
                    // Q4_0/Q8_0 768 also with 72 rows (whole 8-row groups, the last 32-row tile a quarter full): CUDA multiplies Q4_0
                    // matrices of that shape from a tiled copy (docs/gpu-kernels.md#tiled-q4_0-weights).
                    int[] cols = kQuant ? [768, 1280] : type is GgmlType.Q4_0 or GgmlType.Q8_0 ? [96, 544, 768] : [96, 544];
                    foreach (int c in cols)
                        foreach (int rows in c == 768 && type is GgmlType.Q4_0 or GgmlType.Q8_0 ? new[] { 37, 72 } : [37])
                            foreach (int tokens in new[] { 1, 3, 11, 20, 40 })
                                data.Add(backend, type, rows, c, tokens);
                }
            return data;
        }
    }

    public static TheoryData<string, GgmlType, int> GetRowsCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, int>();
            foreach (string backend in Candidates)
                foreach (var type in WeightTypes)
                {
                    data.Add(backend, type, GgmlTypes.Get(type).BlockSize == 256 ? 768 : 96);
                    if (type is GgmlType.Q4_0 or GgmlType.Q8_0) data.Add(backend, type, 768); // rows a GPU may hold in its own layout (see MatMulCases)
                }
            return data;
        }
    }

    public static TheoryData<string, RopeMode, int, int> RopeCases
    {
        get
        {
            var data = new TheoryData<string, RopeMode, int, int>();
            foreach (string backend in Candidates)
                foreach (var mode in new[] { RopeMode.Normal, RopeMode.NeoX })
                {
                    data.Add(backend, mode, 64, 0);   // every dimension rotated, from position 0
                    data.Add(backend, mode, 32, 17);  // partial rotation, later positions
                    data.Add(backend, mode, 64, 1000); // long context: angle precision matters
                }
            return data;
        }
    }

    public static TheoryData<string, RopeMode, int, int, float> RopeWithFactorsCases
    {
        get
        {
            var data = new TheoryData<string, RopeMode, int, int, float>();
            foreach (string backend in Candidates)
                foreach (var mode in new[] { RopeMode.Normal, RopeMode.NeoX })
                {
                    data.Add(backend, mode, 64, 0, 10000f);     // every dimension rotated, from position 0
                    data.Add(backend, mode, 32, 17, 10000f);    // partial rotation, later positions
                    data.Add(backend, mode, 64, 1000, 500000f); // Llama 3 base, long context: angle precision matters
                }
            return data;
        }
    }

    public static TheoryData<string, GgmlType, int, int, int> AttentionCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, int, int, int>();
            foreach (string backend in Candidates)
                foreach (var type in CacheBytes.Types)
                {
                    // Quantized caches (Q8_0, Q4_0) hold each head as whole 32-element blocks: their odd head size is 96, not 34.
                    int odd = CacheBytes.IsQuantized(type) ? 96 : 34;
                    data.Add(backend, type, 1, 0, 64);    // first token
                    data.Add(backend, type, 1, 70, 64);   // decode step with a longer history (> one work-group of positions)
                    data.Add(backend, type, 1, 512, 64);  // 513 positions: one past a GPU's split (CUDA: 512 per block), the last part 1 long
                    data.Add(backend, type, 1, 1300, 64); // a long history, split by a GPU over several blocks per head
                    data.Add(backend, type, 5, 9, 64);    // batch continuing a prompt
                    data.Add(backend, type, 1, 70, odd);  // a head size that is no multiple of 4 (no vector loads of K/V rows), or of 64
                    data.Add(backend, type, 5, 9, odd);
                    // Prompts (a GPU may take a tensor-core kernel from 16 tokens on F16 caches: tiles of 64 tokens, 64 positions)
                    data.Add(backend, type, 80, 0, 64);   // a prompt of a tile and a part
                    data.Add(backend, type, 70, 30, 128); // continuing a prompt: the causal edge off the tile grid
                    data.Add(backend, type, 16, 0, 128);  // one warp's 16 tokens, one partial chunk
                }
            return data;
        }
    }

    public static TheoryData<string, GgmlType> ConvertCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType>();
            foreach (string backend in Candidates)
                foreach (var type in CacheBytes.Types)
                    data.Add(backend, type);
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(MatMulCases))]
    public void MatMul_matches_cpu(string backend, GgmlType type, int rows, int cols, int tokens)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.MatMul, type);
        using var reference = new DeviceSession(Reference);
        RequireOp(reference.Queue, ComputeOp.MatMul, type);
        var info = new TensorInfo("w", type, [cols, rows]);
        byte[] weights = TestData.Matrix(type, cols * 31 + rows, rows, cols);
        float[] x = TestData.Random(tokens * 7 + cols, (long)tokens * cols);

        float[] Run(DeviceSession s)
        {
            var (w, _) = s.Weights(info, weights);
            var xs = s.Floats(x);
            var y = s.Zeros((long)tokens * rows);
            s.Queue.MatMul(w, rows, cols, xs, y, tokens);
            return s.Read(y, (long)tokens * rows);
        }

        double tolerance = MatMulTolerance(type);
        float[] actual = Run(target);
        TestData.AssertClose(Run(reference), actual, tolerance, $"{backend} MatMul {type} [{cols} x {rows}] x {tokens} tokens vs cpu");
        // Also against the exact product of the dequantized weights (double precision): a backend may round activations
        // (as the CPU does) but must stay within the same tolerance of the true result.
        TestData.AssertClose(ExactMatMul(type, weights, rows, cols, x, tokens), actual, tolerance,
            $"{backend} MatMul {type} [{cols} x {rows}] x {tokens} tokens vs exact dequantized product");
    }

    public static TheoryData<string, GgmlType> RepeatedMatMulCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType>();
            foreach (string backend in Candidates)
                foreach (var type in new[] { GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.F16 })
                    data.Add(backend, type);
            return data;
        }
    }

    /// <summary>
    /// A prompt's matmuls in the same order step after step, on one queue: three matrices of different shapes, two of them in one
    /// MatMulShared, at 40 tokens (prompt-sized: CUDA's cuBLAS path), three rounds with new inputs each. A backend that keeps
    /// copies of weights or inputs between matmuls (CUDA's F16 scratches; docs/gpu-kernels.md#prompt-gemm-inputs) must still
    /// have every product read its own weights and the round's input.
    /// </summary>
    [Theory]
    [MemberData(nameof(RepeatedMatMulCases))]
    public void MatMul_in_the_same_order_every_round_matches_cpu(string backend, GgmlType type)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.MatMul, type);
        using var reference = new DeviceSession(Reference);
        const int cols = 768, tokens = 40;
        int[] rows = [72, 37, 37];
        var infos = rows.Select((r, i) => new TensorInfo($"w{i}", type, [cols, r])).ToArray();
        byte[][] weights = [.. rows.Select((r, i) => TestData.Matrix(type, 100 + i, r, cols))];

        float[][] Round(DeviceSession s, DeviceTensor[] w, DeviceTensor[] y, int round)
        {
            var x = s.Floats(TestData.Random(7 * round + 1, (long)tokens * cols));
            s.Queue.MatMul(w[0], rows[0], cols, x, y[0], tokens);
            s.Queue.MatMulShared(x, cols, tokens, [new MatMulTarget(w[1], rows[1], y[1]), new MatMulTarget(w[2], rows[2], y[2])]);
            return [.. rows.Select((r, i) => s.Read(y[i], (long)tokens * r))];
        }

        (DeviceTensor[] W, DeviceTensor[] Y) Place(DeviceSession s)
            => ([.. infos.Select((info, i) => s.Weights(info, weights[i]).Tensor)], [.. rows.Select(r => s.Zeros((long)tokens * r))]);

        var (tw, ty) = Place(target);
        var (rw, ry) = Place(reference);
        for (int round = 0; round < 3; round++)
        {
            float[][] expected = Round(reference, rw, ry, round), actual = Round(target, tw, ty, round);
            for (int i = 0; i < rows.Length; i++)
                TestData.AssertClose(expected[i], actual[i], MatMulTolerance(type), $"{backend} MatMul {type} round {round}, matrix {i} [{cols} x {rows[i]}] x {tokens} tokens vs cpu");
        }
    }

    /// <summary>MatMul tolerance (relative to the reference's RMS) for weights of <paramref name="type"/>; the fused ops' tests use it too.</summary>
    internal static double MatMulTolerance(GgmlType type) => type switch { GgmlType.F32 => 1e-4, GgmlType.F16 or GgmlType.BF16 => 1e-3, _ => 3e-2 };

    /// <summary>y[t, r] = Σ_c x[t, c] · w[r, c] in double precision over the dequantized weights.</summary>
    internal static float[] ExactMatMul(GgmlType type, byte[] weights, int rows, int cols, float[] x, int tokens)
    {
        long rowBytes = GgmlTypes.RowSize(type, cols);
        var w = new float[cols];
        var y = new float[tokens * rows];
        for (int r = 0; r < rows; r++)
        {
            Dequantizer.Dequantize(type, weights.AsSpan((int)(r * rowBytes), (int)rowBytes), w);
            for (int t = 0; t < tokens; t++)
            {
                double sum = 0;
                for (int c = 0; c < cols; c++) sum += (double)w[c] * x[t * cols + c];
                y[t * rows + r] = (float)sum;
            }
        }
        return y;
    }

    [Theory]
    [MemberData(nameof(GetRowsCases))]
    public void GetRows_matches_cpu(string backend, GgmlType type, int cols)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.GetRows, type);
        using var reference = new DeviceSession(Reference);
        RequireOp(reference.Queue, ComputeOp.GetRows, type);
        const int tableRows = 29;
        var info = new TensorInfo("table", type, [cols, tableRows]);
        byte[] table = TestData.Matrix(type, 5, tableRows, cols);
        int[] rows = [0, 28, 13, 13, 7];

        float[] Run(DeviceSession s)
        {
            var (t, _) = s.Weights(info, table);
            var dst = s.Zeros((long)rows.Length * cols);
            s.Queue.GetRows(t, cols, rows, dst);
            return s.Read(dst, (long)rows.Length * cols);
        }

        TestData.AssertClose(Run(reference), Run(target), 1e-6, $"{backend} GetRows {type}");
    }

    [Theory]
    [MemberData(nameof(Candidates), MemberType = typeof(ConformanceBackends))]
    public void RmsNorm_matches_cpu(string backend)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.RmsNorm, GgmlType.F32);
        using var reference = new DeviceSession(Reference);
        const int rows = 3, n = 771;
        float[] x = TestData.Random(1, rows * n, 3f), weight = TestData.Random(2, n);

        float[] Run(DeviceSession s)
        {
            var y = s.Zeros(rows * n);
            s.Queue.RmsNorm(s.Floats(x), s.Floats(weight), y, rows, n, 1e-5f);
            return s.Read(y, rows * n);
        }

        TestData.AssertClose(Run(reference), Run(target), 1e-5, $"{backend} RmsNorm");
    }

    public static TheoryData<string, int> RmsNormRowsCases
    {
        get
        {
            var data = new TheoryData<string, int>();
            foreach (string backend in ConformanceBackends.Candidates)
                foreach (int rows in new[] { 1, 3, 16, 40 }) // a decode row, small batches (several sequences), a prompt
                    data.Add(backend, rows);
            return data;
        }
    }

    /// <summary>
    /// RmsNorm over rows of whole 32-element blocks, then the matmul that reads them: a backend may quantize the rows for its
    /// 8-bit matmuls in the same pass (a GPU does for a decode row and for small batches), and the matmul must read exactly them.
    /// </summary>
    [Theory]
    [MemberData(nameof(RmsNormRowsCases))]
    public void RmsNorm_then_matmul_reads_its_output(string backend, int rows)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.RmsNorm, GgmlType.F32);
        const int n = 768;
        float[] x = TestData.Random(3 + rows, (long)rows * n, 3f), weight = TestData.Random(4, n);
        var next = FusedOpConformanceTests.NextMatVec.For(n, target.Queue);
        RequireOp(target.Queue, ComputeOp.MatMul, next.Type);
        var y = target.Zeros((long)rows * n);
        var nw = next.Place(target);
        var xd = target.Floats(x);
        next.Run(target, nw, xd, rows); // a matmul of other values first (a backend may keep their quantized copy)
        target.Queue.RmsNorm(xd, target.Floats(weight), y, rows, n, 1e-5f);
        var after = next.Run(target, nw, y, rows);
        float[] normalized = target.Read(y, (long)rows * n);
        var expected = new float[normalized.Length];
        for (int r = 0; r < rows; r++)
        {
            double sum = 0;
            for (int i = 0; i < n; i++) sum += (double)x[r * n + i] * x[r * n + i];
            double scale = 1 / Math.Sqrt(sum / n + 1e-5);
            for (int i = 0; i < n; i++) expected[r * n + i] = (float)(x[r * n + i] * scale * weight[i]);
        }
        TestData.AssertClose(expected, normalized, 1e-5, $"{backend} RmsNorm {rows} x {n}");
        next.AssertReads(normalized, target.Read(after, (long)rows * next.Rows), rows, $"{backend} RmsNorm {rows} x {n}, then");
    }

    [Theory]
    [MemberData(nameof(RopeCases))]
    public void Rope_matches_cpu(string backend, RopeMode mode, int dims, int firstPosition)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.Rope, GgmlType.F32);
        using var reference = new DeviceSession(Reference);
        const int tokens = 3, heads = 5, headSize = 64;
        float[] x = TestData.Random(3, tokens * heads * headSize);
        var rope = new RopeParams(mode, dims, 10000f, 1f);

        float[] Run(DeviceSession s)
        {
            var t = s.Floats(x);
            s.Queue.Rope(t, tokens, heads, headSize, firstPosition, rope);
            return s.Read(t, x.Length);
        }

        TestData.AssertClose(Run(reference), Run(target), 1e-4, $"{backend} Rope {mode} dims {dims} from {firstPosition}");
    }

    [Theory]
    [MemberData(nameof(RopeWithFactorsCases))]
    public void RopeWithFactors_matches_cpu(string backend, RopeMode mode, int dims, int firstPosition, float frequencyBase)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.RopeFrequencyFactors, GgmlType.F32);
        using var reference = new DeviceSession(Reference);
        const int tokens = 3, heads = 5, headSize = 64;
        float[] x = TestData.Random(3, tokens * heads * headSize);
        var rope = new RopeParams(mode, dims, frequencyBase, 1f);
        // Llama 3.1-like factors (1 for fast pairs, 8 for slow ones, a blend between) and a few odd values, so a backend
        // that indexes them by element instead of by pair, or ignores them, is caught.
        var factors = new float[dims / 2];
        for (int i = 0; i < factors.Length; i++) factors[i] = i < factors.Length / 4 ? 1f : i < factors.Length / 2 ? 1f + 14f * i / factors.Length : 8f;
        factors[1] = 0.5f;
        factors[^2] = 3.25f;

        float[] Run(DeviceSession s, bool withFactors)
        {
            var t = s.Floats(x);
            // At a non-zero offset, as the tensor sits inside a weights buffer.
            var f = s.Floats([0f, 0f, 0f, .. factors]).Skip(3);
            if (withFactors) s.Queue.RopeWithFactors(t, tokens, heads, headSize, firstPosition, rope, f);
            else s.Queue.Rope(t, tokens, heads, headSize, firstPosition, rope);
            return s.Read(t, x.Length);
        }

        float[] expected = Run(reference, withFactors: true);
        TestData.AssertClose(expected, Run(target, withFactors: true), 1e-4, $"{backend} RopeWithFactors {mode} dims {dims} from {firstPosition}");
        // The case is only meaningful if the factors change the result well beyond the tolerance.
        double moved = expected.Zip(Run(reference, withFactors: false), (a, b) => Math.Abs(a - b)).Max();
        Assert.True(moved > 0.1, $"factors moved values by only {moved} from position {firstPosition}");
    }

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void Attention_matches_cpu(string backend, GgmlType cacheType, int tokens, int firstPosition, int headSize)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.Attention, cacheType);
        RequireOp(target.Queue, ComputeOp.Convert, cacheType);
        using var reference = new DeviceSession(Reference);
        const int heads = 8, kvHeads = 2;
        int visible = firstPosition + tokens, capacity = Math.Max(96, visible + 8);
        float[] q = TestData.Random(4, tokens * heads * headSize);
        float[] k = TestData.Random(5, visible * kvHeads * headSize);
        float[] v = TestData.Random(6, visible * kvHeads * headSize);
        var p = new AttentionParams(tokens, firstPosition, heads, kvHeads, headSize, 1f / MathF.Sqrt(headSize));

        // A quantized cache gets the reference's blocks on both sides (its Convert is checked on its own, Convert_matches_cpu), so
        // this checks the attention alone: a value on a level's edge cannot take another level here.
        byte[]? kBlocks = null, vBlocks = null;
        if (CacheBytes.IsQuantized(cacheType))
        {
            var kc = reference.Zeros((long)capacity * kvHeads * headSize, cacheType);
            var vc = reference.Zeros((long)capacity * kvHeads * headSize, cacheType);
            reference.Queue.Convert(reference.Floats(k), kc, k.Length);
            reference.Queue.Convert(reference.Floats(v), vc, v.Length);
            long bytes = GgmlTypes.RowSize(cacheType, (long)capacity * kvHeads * headSize);
            (kBlocks, vBlocks) = (reference.ReadBytes(kc, bytes), reference.ReadBytes(vc, bytes));
        }

        float[] Run(DeviceSession s)
        {
            DeviceTensor kCache, vCache;
            if (kBlocks is not null && vBlocks is not null) (kCache, vCache) = (CacheBytes.Upload(s, cacheType, kBlocks), CacheBytes.Upload(s, cacheType, vBlocks));
            else
            {
                // Caches are filled through Convert on the device, as the model does.
                kCache = s.Zeros((long)capacity * kvHeads * headSize, cacheType);
                vCache = s.Zeros((long)capacity * kvHeads * headSize, cacheType);
                s.Queue.Convert(s.Floats(k), kCache, k.Length);
                s.Queue.Convert(s.Floats(v), vCache, v.Length);
            }
            var output = s.Zeros(q.Length);
            s.Queue.Attention(s.Floats(q), kCache, vCache, output, p);
            return s.Read(output, q.Length);
        }

        // A prompt over an F16 cache may run with f16 queries and softmax weights on the tensor cores (CUDA's attention_mma_f16_d*,
        // docs/gpu-kernels.md#prompt-attention): half-precision rounding of q and of each weight, so a looser bound there; the same
        // for a quantized cache, whose blocks a GPU may decode to f16 for those kernels.
        double tolerance = cacheType != GgmlType.F32 && tokens >= 16 ? 4e-3 : 1e-4;
        TestData.AssertClose(Run(reference), Run(target), tolerance, $"{backend} Attention {cacheType} cache, head size {headSize}, {tokens} tokens from {firstPosition}");
    }

    [Theory]
    [MemberData(nameof(Candidates), MemberType = typeof(ConformanceBackends))]
    public void SiluMul_matches_cpu(string backend)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.SiluMul, GgmlType.F32);
        using var reference = new DeviceSession(Reference);
        const int n = 1001;
        float[] gate = TestData.Random(7, n, 4f), up = TestData.Random(8, n);

        float[] Run(DeviceSession s)
        {
            var y = s.Zeros(n);
            s.Queue.SiluMul(s.Floats(gate), s.Floats(up), y, n);
            return s.Read(y, n);
        }

        TestData.AssertClose(Run(reference), Run(target), 1e-5, $"{backend} SiluMul");
    }

    [Theory]
    [MemberData(nameof(Candidates), MemberType = typeof(ConformanceBackends))]
    public void Add_matches_cpu_including_in_place(string backend)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.Add, GgmlType.F32);
        using var reference = new DeviceSession(Reference);
        const int n = 1003;
        float[] a = TestData.Random(9, n), b = TestData.Random(10, n);

        float[] Run(DeviceSession s)
        {
            var x = s.Floats(a);
            s.Queue.Add(x, s.Floats(b), x, n); // y aliases a, as the residual adds do
            return s.Read(x, n);
        }

        TestData.AssertClose(Run(reference), Run(target), 1e-6, $"{backend} Add");
    }

    [Theory]
    [MemberData(nameof(Candidates), MemberType = typeof(ConformanceBackends))]
    public void AddBias_matches_cpu(string backend)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.AddBias, GgmlType.F32);
        using var reference = new DeviceSession(Reference);
        const int rows = 4, n = 259;
        float[] x = TestData.Random(11, rows * n), bias = TestData.Random(12, n);

        float[] Run(DeviceSession s)
        {
            var t = s.Floats(x);
            s.Queue.AddBias(t, s.Floats(bias), rows, n);
            return s.Read(t, rows * n);
        }

        TestData.AssertClose(Run(reference), Run(target), 1e-6, $"{backend} AddBias");
    }

    /// <remarks>
    /// F32 and F16: bit for bit. Q8_0 and Q4_0 (a quantized KV cache, docs/batching.md#quantized-kv-cache): 544 elements (17 blocks;
    /// a quantized row is whole blocks), the GGUF formulas (d = max|x|/127, or the signed largest / −8); every block's scale the
    /// same bits as the CPU's, and every quant the same except where the value sits within 1e-3 of a level's edge (x/d computed
    /// in another order may round the other way there), which may take the neighbouring level.
    /// </remarks>
    [Theory]
    [MemberData(nameof(ConvertCases))]
    public void Convert_matches_cpu_bit_for_bit(string backend, GgmlType type)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.Convert, type);
        using var reference = new DeviceSession(Reference);
        bool quantized = CacheBytes.IsQuantized(type);
        int n = quantized ? 544 : 517;
        float[] x = TestData.Random(13, n, 100f);
        x[0] = 65519f; x[1] = -1e-7f; x[2] = 0.1f; x[3] = 70000f; // rounding edges, a subnormal half, overflow to infinity
        if (quantized)
        {
            for (int i = 32; i < 64; i++) x[i] = 0;                          // a block of zeros: d = 0
            x[70] = -x.Skip(64).Take(32).Max(MathF.Abs) * 1.5f; x[80] = -x[70]; // a tie in magnitude: the first (negative) wins
        }

        byte[] Run(DeviceSession s)
        {
            var dst = s.Zeros(n, type);
            s.Queue.Convert(s.Floats(x), dst, n);
            return s.ReadBytes(dst, GgmlTypes.RowSize(type, n));
        }

        byte[] expected = Run(reference), actual = Run(target);
        if (!quantized)
        {
            Assert.Equal(expected, actual);
            return;
        }
        var info = GgmlTypes.Get(type);
        for (int b = 0; b < n / 32; b++)
        {
            int at = b * info.BytesPerBlock;
            Assert.True(expected.AsSpan(at, 2).SequenceEqual(actual.AsSpan(at, 2)), $"{backend} Convert {type}: block {b}'s scale differs from the cpu's");
            // The unrounded scale the levels were picked with (the stored one is its f16 rounding).
            var block = x.AsSpan(32 * b, 32);
            float amax = 0, max = 0;
            foreach (float v in block)
                if (amax < MathF.Abs(v)) { amax = MathF.Abs(v); max = v; }
            float d = type == GgmlType.Q8_0 ? amax / 127f : max / -8f;
            for (int i = 0; i < 32; i++)
            {
                int e = Level(type, expected, at, i), a = Level(type, actual, at, i);
                if (e == a) continue;
                // The level's edge: Q8_0 rounds x/d to the nearest integer, Q4_0 truncates x/d + 8.5.
                double t = d == 0 ? 0 : x[32 * b + i] / (double)d + (type == GgmlType.Q4_0 ? 8.5 : 0.5);
                bool nearEdge = Math.Abs(t - Math.Round(t)) < 1e-3;
                Assert.True(Math.Abs(e - a) == 1 && nearEdge, $"{backend} Convert {type}: element {32 * b + i} ({x[32 * b + i]}) took level {a}, the cpu {e}");
            }
        }
    }

    /// <summary>Quant <paramref name="i"/> of the block at byte <paramref name="at"/>: Q8_0's int8, Q4_0's nibble (j low, j + 16 high).</summary>
    private static int Level(GgmlType type, byte[] bytes, int at, int i)
        => type == GgmlType.Q8_0 ? (sbyte)bytes[at + 2 + i] : i < 16 ? bytes[at + 2 + i] & 0xF : bytes[at + 2 + i - 16] >> 4;

    [Theory]
    [MemberData(nameof(Candidates), MemberType = typeof(ConformanceBackends))]
    public void Upload_then_Download_round_trips(string backend)
    {
        using var target = new DeviceSession(Require(backend));
        float[] x = TestData.Random(14, 333);
        var t = target.Floats(x);
        Assert.Equal(x, target.Read(t, x.Length));
    }
}

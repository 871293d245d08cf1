using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using Xunit;
using static PluginEngine.Conformance.ConformanceBackends;

namespace PluginEngine.Conformance;

/// <summary>
/// The fused ops of <see cref="IComputeQueue"/> (MatMulShared, MatMulAdd, MatMulSwiGlu, RopeAndStoreKv) on every backend,
/// the CPU included (its defaults are what the forward pass runs there), compared with the CPU reference running the
/// primitive ops one by one and, for the matmuls, with the exact product of the dequantized weights. Tolerances are the
/// primitive ops' (relative to the reference's RMS): a fused GPU path may round activations differently from the
/// primitives (8 bits in a decode step, F16 in a GEMM library) but must stay as close to the true result.
/// Outputs and scratch start as garbage (NaN or random values), so an op that reads them before writing is caught, and
/// what a fused op wrote is read back by a following mat-vec, as the forward pass does: a backend that keeps quantized
/// activations between ops must not reuse a copy made before the fused op overwrote that buffer.
/// </summary>
public abstract class FusedOpConformanceTests
{
    /// <summary>Bytes of poison (all 0xFF: NaN as F32) in outputs, scratch and the gaps between outputs.</summary>
    private const byte Poison = 0xFF;

    /// <summary>The backends whose fused ops are tested: the CPU reference itself, then every candidate.</summary>
    public static IEnumerable<string> Backends()
    {
        yield return ReferenceBackend;
        foreach (string backend in Candidates) yield return backend;
    }

    public static TheoryData<string, GgmlType, GgmlType, GgmlType, int, int> MatMulSharedCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, GgmlType, GgmlType, int, int>();
            int[] tokenCounts = [1, 3, 40]; // a decode step (mat-vec), a small batch, a prompt (GEMM library from 32 tokens)
            foreach (string backend in Backends())
            {
                // q/k/v of one type; row lengths not a multiple of 512 (slide).
                foreach (var type in OpConformanceTests.WeightTypes)
                    foreach (int tokens in tokenCounts)
                        data.Add(backend, type, type, type, IsKQuant(type) ? 1280 : 544, tokens);
                // Mixed sets: Q4_K_M and Q5_K_M (v in Q6_K), and one mixing types a GPU decodes with 8-bit activations and one it does not.
                // Q4_0/Q8_0 rows of 768 (a multiple of 256, with 16-byte aligned rows) are ones a GPU may hold in a layout of its
                // own, and then group by layout rather than type.
                foreach (var (q, k, v) in new[] { (GgmlType.Q4_K, GgmlType.Q4_K, GgmlType.Q6_K), (GgmlType.Q5_K, GgmlType.Q5_K, GgmlType.Q6_K), (GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.F16),
                                                  (GgmlType.Q4_0, GgmlType.Q4_0, GgmlType.Q4_0), (GgmlType.Q4_0, GgmlType.Q4_0, GgmlType.Q8_0) })
                    foreach (int tokens in tokenCounts)
                        data.Add(backend, q, k, v, 768, tokens);
            }
            return data;
        }
    }

    /// <summary>Weight type, rows (37: odd, not whole 32-element blocks; 64: whole blocks), tokens.</summary>
    public static TheoryData<string, GgmlType, int, int> MatMulRowsCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, int, int>();
            foreach (string backend in Backends())
                foreach (var type in OpConformanceTests.WeightTypes)
                    foreach (int rows in new[] { 37, 64 })
                        foreach (int tokens in new[] { 1, 3, 40 })
                            data.Add(backend, type, rows, tokens);
            return data;
        }
    }

    /// <summary>Cache type, mode, rotated dims of the 64-element heads, tokens, first position.</summary>
    public static TheoryData<string, GgmlType, RopeMode, int, int, int> RopeAndStoreKvCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, RopeMode, int, int, int>();
            foreach (string backend in Backends())
                foreach (var cacheType in CacheBytes.Types)
                    foreach (var mode in new[] { RopeMode.Normal, RopeMode.NeoX })
                    {
                        foreach (int tokens in new[] { 1, 5 })
                            foreach (int firstPosition in new[] { 0, 17 })
                                data.Add(backend, cacheType, mode, 64, tokens, firstPosition);
                        data.Add(backend, cacheType, mode, 32, 5, 17); // partial rotation: the other half of k is stored as it is
                    }
            return data;
        }
    }

    public static TheoryData<string, GgmlType, RopeMode, int> RopeAndStoreKvWithFactorsCases
    {
        get
        {
            // From position 17: at position 0 nothing turns, and the factors would not show.
            var data = new TheoryData<string, GgmlType, RopeMode, int>();
            foreach (string backend in Backends())
                foreach (var cacheType in CacheBytes.Types)
                    foreach (var mode in new[] { RopeMode.Normal, RopeMode.NeoX })
                        foreach (int tokens in new[] { 1, 5 })
                            data.Add(backend, cacheType, mode, tokens);
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(MatMulSharedCases))]
    public void MatMulShared_matches_cpu(string backend, GgmlType qType, GgmlType kType, GgmlType vType, int cols, int tokens)
    {
        using var target = new DeviceSession(Require(backend));
        using var reference = new DeviceSession(Reference);
        GgmlType[] types = [qType, kType, vType];
        foreach (var type in types.Distinct())
        {
            RequireOp(target.Queue, ComputeOp.MatMul, type);
            RequireOp(reference.Queue, ComputeOp.MatMul, type);
        }
        int[] rows = [64, 32, 32]; // q, k, v of 4 heads / 2 KV heads of 16
        const int gap = 8;         // poisoned floats after each output, which must stay poisoned
        var infos = new TensorInfo[3];
        var weights = new byte[3][];
        for (int i = 0; i < 3; i++)
        {
            infos[i] = new TensorInfo($"w{i}", types[i], [cols, rows[i]]);
            weights[i] = TestData.Matrix(types[i], cols * 31 + rows[i] * 3 + i, rows[i], cols);
        }
        float[] x = TestData.Random(tokens * 7 + cols, (long)tokens * cols);
        long total = rows.Sum(r => (long)tokens * r + gap);

        // The three outputs back to back in one buffer, each followed by a poisoned gap.
        (float[][] Outputs, byte[] All) Run(DeviceSession s, bool fused)
        {
            var xs = s.Floats(x);
            var outputs = Poisoned(s, total);
            var targets = new MatMulTarget[3];
            long at = 0;
            for (int i = 0; i < 3; i++)
            {
                targets[i] = new MatMulTarget(s.Weights(infos[i], weights[i]).Tensor, rows[i], outputs.Skip(at));
                at += (long)tokens * rows[i] + gap;
            }
            if (fused) s.Queue.MatMulShared(xs, cols, tokens, targets);
            else foreach (var t in targets) s.Queue.MatMul(t.Weight, t.Rows, cols, xs, t.Output, tokens);
            var values = new float[3][];
            for (int i = 0; i < 3; i++) values[i] = s.Read(targets[i].Output, (long)tokens * rows[i]);
            return (values, s.ReadBytes(outputs, total * sizeof(float)));
        }

        var (expected, _) = Run(reference, fused: false);
        var (actual, all) = Run(target, fused: true);
        long gapAt = 0;
        for (int i = 0; i < 3; i++)
        {
            string what = $"{backend} MatMulShared target {i} {types[i]} [{cols} x {rows[i]}] x {tokens} tokens";
            double tolerance = OpConformanceTests.MatMulTolerance(types[i]);
            TestData.AssertClose(expected[i], actual[i], tolerance, $"{what} vs cpu MatMul");
            TestData.AssertClose(OpConformanceTests.ExactMatMul(types[i], weights[i], rows[i], cols, x, tokens), actual[i], tolerance,
                $"{what} vs exact dequantized product");
            gapAt += (long)tokens * rows[i];
            AssertPoisoned(all.AsSpan((int)(gapAt * sizeof(float)), gap * sizeof(float)), $"{what}: the {gap} floats after its output");
            gapAt += gap;
        }
    }

    [Theory]
    [MemberData(nameof(MatMulRowsCases))]
    public void MatMulAdd_matches_cpu(string backend, GgmlType type, int rows, int tokens)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.MatMul, type);
        RequireOp(target.Queue, ComputeOp.Add, GgmlType.F32);
        using var reference = new DeviceSession(Reference);
        RequireOp(reference.Queue, ComputeOp.MatMul, type);
        int cols = FusedCols(type, rows);
        var info = new TensorInfo("w", type, [cols, rows]);
        byte[] weights = TestData.Matrix(type, cols * 17 + rows, rows, cols);
        float[] x = TestData.Random(tokens * 5 + cols, (long)tokens * cols);
        // The residual stream: the product's rms is ~sqrt(cols / 3) ≈ 13-16, so y's own values weigh as much as the product.
        float[] y0 = TestData.Random(tokens * 3 + rows, (long)tokens * rows, 10f);
        long n = (long)tokens * rows;
        var next = NextMatVec.For(rows, target.Queue);

        (float[] Y, float[] Next) Run(DeviceSession s, bool fused)
        {
            var (w, _) = s.Weights(info, weights);
            var xs = s.Floats(x);
            var y = s.Floats(y0);
            var scratch = Poisoned(s, n);
            var nw = next.Place(s);
            next.Run(s, nw, y, tokens); // reads y before the op (a backend may keep its quantized copy)
            if (fused) s.Queue.MatMulAdd(w, rows, cols, xs, y, tokens, scratch);
            else
            {
                s.Queue.MatMul(w, rows, cols, xs, scratch, tokens);
                s.Queue.Add(y, scratch, y, n);
            }
            var after = next.Run(s, nw, y, tokens); // and after it: must see the sums
            return (s.Read(y, n), s.Read(after, (long)tokens * next.Rows));
        }

        string what = $"{backend} MatMulAdd {type} [{cols} x {rows}] x {tokens} tokens";
        double tolerance = OpConformanceTests.MatMulTolerance(type);
        var (actual, actualNext) = Run(target, fused: true);
        TestData.AssertClose(Run(reference, fused: false).Y, actual, tolerance, $"{what} vs cpu MatMul + Add");
        float[] exact = OpConformanceTests.ExactMatMul(type, weights, rows, cols, x, tokens);
        for (long i = 0; i < n; i++) exact[i] = (float)((double)y0[i] + exact[i]);
        TestData.AssertClose(exact, actual, tolerance, $"{what} vs y + exact dequantized product");
        next.AssertReads(actual, actualNext, tokens, $"{what}, then");
    }

    [Theory]
    [MemberData(nameof(MatMulRowsCases))]
    public void MatMulSwiGlu_matches_cpu(string backend, GgmlType type, int rows, int tokens)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.MatMul, type);
        RequireOp(target.Queue, ComputeOp.SiluMul, GgmlType.F32);
        using var reference = new DeviceSession(Reference);
        RequireOp(reference.Queue, ComputeOp.MatMul, type);
        int cols = FusedCols(type, rows);
        var gateInfo = new TensorInfo("gate", type, [cols, rows]);
        var upInfo = new TensorInfo("up", type, [cols, rows]);
        byte[] gateWeights = TestData.Matrix(type, cols * 13 + rows, rows, cols);
        byte[] upWeights = TestData.Matrix(type, cols * 11 + rows, rows, cols);
        // Activations scaled so x·Wgate (rms ~ 0.1 · sqrt(cols / 3) ≈ 1.3-1.6) spans silu's curved part, not only its linear tails.
        float[] x = TestData.Random(tokens * 9 + cols, (long)tokens * cols, 0.1f);
        float[] gate0 = TestData.Random(tokens + rows, (long)tokens * rows);
        long n = (long)tokens * rows;
        var next = NextMatVec.For(rows, target.Queue);

        (float[] Gate, float[] Next) Run(DeviceSession s, bool fused)
        {
            var wg = s.Weights(gateInfo, gateWeights).Tensor;
            var wu = s.Weights(upInfo, upWeights).Tensor;
            var xs = s.Floats(x);
            var gate = s.Floats(gate0);
            var up = Poisoned(s, n);
            var nw = next.Place(s);
            next.Run(s, nw, gate, tokens); // reads gate's old values before the op (a backend may keep its quantized copy)
            if (fused) s.Queue.MatMulSwiGlu(wg, wu, rows, cols, xs, gate, up, tokens);
            else
            {
                s.Queue.MatMul(wg, rows, cols, xs, gate, tokens);
                s.Queue.MatMul(wu, rows, cols, xs, up, tokens);
                s.Queue.SiluMul(gate, up, gate, n);
            }
            var down = next.Run(s, nw, gate, tokens); // the down projection reads what the op wrote
            return (s.Read(gate, n), s.Read(down, (long)tokens * next.Rows));
        }

        string what = $"{backend} MatMulSwiGlu {type} 2 x [{cols} x {rows}] x {tokens} tokens";
        double tolerance = OpConformanceTests.MatMulTolerance(type);
        var (actual, actualNext) = Run(target, fused: true);
        TestData.AssertClose(Run(reference, fused: false).Gate, actual, ProductAmplification * tolerance, tolerance, $"{what} vs cpu MatMul, MatMul, SiluMul");
        float[] g = OpConformanceTests.ExactMatMul(type, gateWeights, rows, cols, x, tokens);
        float[] u = OpConformanceTests.ExactMatMul(type, upWeights, rows, cols, x, tokens);
        var exact = new float[n];
        for (long i = 0; i < n; i++) exact[i] = (float)(g[i] / (1 + Math.Exp(-(double)g[i])) * u[i]);
        TestData.AssertClose(exact, actual, ProductAmplification * tolerance, tolerance, $"{what} vs silu(exact gate) · exact up");
        next.AssertReads(actual, actualNext, tokens, $"{what}, then");
    }

    /// <summary>
    /// How much further than the MatMul tolerance the largest error may go where a heavy-tailed product is involved: silu(a)·b
    /// with a and b each within the MatMul tolerance of their rms, or a mat-vec reading such products (8-bit activations
    /// are coarser where a block holds one large value). Relative to the product's rms, the error at its largest elements
    /// is that of a factor times the other factor's magnitude there: the CPU (8-bit activations) measured up to 8.3e-2
    /// against the exact SwiGLU for quantized weights (its MatMul alone: 2.1e-2) and 5.6e-2 for the Q8_0 mat-vec after it.
    /// The rms error keeps the MatMul tolerance (measured: at most 1.1e-2); a wrong op or a stale input is off by order 1.
    /// </summary>
    internal const double ProductAmplification = 4;

    [Theory]
    [MemberData(nameof(RopeAndStoreKvCases))]
    public void RopeAndStoreKv_matches_cpu(string backend, GgmlType cacheType, RopeMode mode, int dims, int tokens, int firstPosition)
        => RopeAndStoreKv(backend, cacheType, mode, dims, tokens, firstPosition, withFactors: false);

    [Theory]
    [MemberData(nameof(RopeAndStoreKvWithFactorsCases))]
    public void RopeAndStoreKv_with_factors_matches_cpu(string backend, GgmlType cacheType, RopeMode mode, int tokens)
        => RopeAndStoreKv(backend, cacheType, mode, 64, tokens, 17, withFactors: true);

    private static void RopeAndStoreKv(string backend, GgmlType cacheType, RopeMode mode, int dims, int tokens, int firstPosition, bool withFactors)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, withFactors ? ComputeOp.RopeFrequencyFactors : ComputeOp.Rope, GgmlType.F32);
        RequireOp(target.Queue, ComputeOp.Convert, cacheType);
        using var reference = new DeviceSession(Reference);
        RequireOp(reference.Queue, withFactors ? ComputeOp.RopeFrequencyFactors : ComputeOp.Rope, GgmlType.F32);
        const int heads = 4, kvHeads = 2, headSize = 64, capacity = 24, kvd = kvHeads * headSize;
        float[] q = TestData.Random(21, tokens * heads * headSize);
        float[] k = TestData.Random(22, tokens * kvd);
        float[] v = TestData.Random(23, tokens * kvd);
        var p = new AttentionParams(tokens, firstPosition, heads, kvHeads, headSize, 1f / MathF.Sqrt(headSize));
        var rope = new RopeParams(mode, dims, 10000f, 1f);
        float[] factors = FrequencyFactors(dims / 2);
        // Each cache is one row longer than its capacity and starts one row in (a non-zero offset, as a layer's cache in a
        // shared buffer); every byte outside the batch's rows is a finite sentinel that must survive.
        byte[] kSentinel = CacheBytes.Encode(cacheType, TestData.Random(24, (capacity + 1) * kvd, 50f));
        byte[] vSentinel = CacheBytes.Encode(cacheType, TestData.Random(25, (capacity + 1) * kvd, 50f));

        (float[] Q, float[] K, byte[] KCache, byte[] VCache) Run(DeviceSession s, bool fused, bool useFactors)
        {
            var qt = s.Floats(q);
            var kt = s.Floats(k);
            var vt = s.Floats(v);
            var kc = CacheBytes.Upload(s, cacheType, kSentinel);
            var vc = CacheBytes.Upload(s, cacheType, vSentinel);
            DeviceTensor? f = useFactors ? s.Floats([0f, 0f, 0f, .. factors]).Skip(3) : null; // at a non-zero offset, as in a weights buffer
            if (fused) s.Queue.RopeAndStoreKv(qt, kt, vt, kc.Skip(kvd), vc.Skip(kvd), p, rope, f);
            else // the reference only rotates: the target's cache rows are checked against its rotated k and against v, in F32
            {
                if (f is { } ft)
                {
                    s.Queue.RopeWithFactors(qt, tokens, heads, headSize, firstPosition, rope, ft);
                    s.Queue.RopeWithFactors(kt, tokens, kvHeads, headSize, firstPosition, rope, ft);
                }
                else
                {
                    s.Queue.Rope(qt, tokens, heads, headSize, firstPosition, rope);
                    s.Queue.Rope(kt, tokens, kvHeads, headSize, firstPosition, rope);
                }
            }
            return (s.Read(qt, q.Length), s.Read(kt, k.Length), s.ReadBytes(kc, kSentinel.Length), s.ReadBytes(vc, vSentinel.Length));
        }

        string what = $"{backend} RopeAndStoreKv {mode} dims {dims} {cacheType} cache, {tokens} tokens from {firstPosition}{(withFactors ? " with factors" : "")}";
        var expected = Run(reference, fused: false, withFactors);
        var actual = Run(target, fused: true, withFactors);
        TestData.AssertClose(expected.Q, actual.Q, 1e-4, $"{what}: q");
        TestData.AssertClose(expected.K, actual.K, 1e-4, $"{what}: k");
        if (withFactors)
        {
            // Only meaningful if the factors change the result well beyond the tolerance.
            double moved = expected.K.Zip(Run(reference, fused: false, useFactors: false).K, (a, b) => Math.Abs(a - b)).Max();
            Assert.True(moved > 0.1, $"factors moved k by only {moved} from position {firstPosition}");
        }

        // Cache rows: the batch's hold k (rotated) and v, converted (a quantized cache: whole rows of blocks, each value within a
        // step of its block); every other byte is the sentinel.
        int rowBytes = (int)GgmlTypes.RowSize(cacheType, kvd);
        int from = (1 + firstPosition) * rowBytes, length = tokens * rowBytes;
        double cacheTolerance = cacheType == GgmlType.F16 ? 3e-3 : 1e-4; // F16: rounding of 2^-11 of values up to ~4.3 x rms
        foreach (var (name, cache, sentinel, values) in new[] { ("K", actual.KCache, kSentinel, expected.K), ("V", actual.VCache, vSentinel, v) })
        {
            CacheBytes.AssertHolds(cacheType, values, cache.AsSpan(from, length), cacheTolerance, $"{what}: {name} cache rows {firstPosition}..{firstPosition + tokens - 1}");
            AssertBytesEqual(sentinel.AsSpan(0, from), cache.AsSpan(0, from), $"{what}: {name} cache before row {firstPosition}");
            AssertBytesEqual(sentinel.AsSpan(from + length), cache.AsSpan(from + length), $"{what}: {name} cache from row {firstPosition + tokens}");
        }
    }

    /// <summary>
    /// q/k/v weight types, cache type, mode, rotated dims of the 64-element heads, tokens, first position, with frequency factors.
    /// One token is a decode step (a GPU rotates and stores in its mat-vec's epilogue; Q4_K_M's v in Q6_K takes a launch of its
    /// own); F16 weights, NeoX pairs and several tokens take the two fused ops on any backend.
    /// </summary>
    public static TheoryData<string, GgmlType, GgmlType, GgmlType, GgmlType, RopeMode, int, int, int, bool> MatMulRopeAndStoreKvCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, GgmlType, GgmlType, GgmlType, RopeMode, int, int, int, bool>();
            const GgmlType q4 = GgmlType.Q4_0, f16 = GgmlType.F16;
            foreach (string backend in Backends())
            {
                foreach (var (q, k, v) in new[] { (q4, q4, q4), (GgmlType.Q8_0, GgmlType.Q8_0, GgmlType.Q8_0), (GgmlType.Q4_K, GgmlType.Q4_K, GgmlType.Q6_K),
                                                  (q4, q4, GgmlType.Q8_0), (f16, f16, f16) })
                    data.Add(backend, q, k, v, f16, RopeMode.Normal, 64, 1, 17, false);
                data.Add(backend, q4, q4, q4, GgmlType.F32, RopeMode.Normal, 64, 1, 17, false);
                data.Add(backend, q4, q4, q4, GgmlType.Q8_0, RopeMode.Normal, 64, 1, 17, false); // quantized caches: a GPU that takes them
                data.Add(backend, q4, q4, q4, GgmlType.Q4_0, RopeMode.Normal, 64, 3, 17, false); // may quantize in the mat-vec's epilogue
                data.Add(backend, q4, q4, q4, f16, RopeMode.Normal, 64, 1, 0, false);   // position 0: nothing turns
                data.Add(backend, q4, q4, q4, f16, RopeMode.Normal, 32, 1, 17, false);  // partial rotation
                data.Add(backend, q4, q4, q4, f16, RopeMode.Normal, 64, 1, 17, true);
                data.Add(backend, q4, q4, q4, f16, RopeMode.NeoX, 64, 1, 17, false);
                data.Add(backend, q4, q4, q4, f16, RopeMode.Normal, 64, 3, 17, false);
            }
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(MatMulRopeAndStoreKvCases))]
    public void MatMulRopeAndStoreKv_matches_cpu(string backend, GgmlType qType, GgmlType kType, GgmlType vType, GgmlType cacheType, RopeMode mode,
                                                 int dims, int tokens, int firstPosition, bool withFactors)
    {
        GgmlType[] types = [qType, kType, vType];
        using var target = new DeviceSession(Require(backend));
        using var reference = new DeviceSession(Reference);
        foreach (var type in types.Distinct())
        {
            RequireOp(target.Queue, ComputeOp.MatMul, type);
            RequireOp(reference.Queue, ComputeOp.MatMul, type);
        }
        var ropeOp = withFactors ? ComputeOp.RopeFrequencyFactors : ComputeOp.Rope;
        RequireOp(target.Queue, ropeOp, GgmlType.F32);
        RequireOp(target.Queue, ComputeOp.Convert, cacheType);
        RequireOp(reference.Queue, ropeOp, GgmlType.F32);
        const int heads = 4, kvHeads = 2, headSize = 64, capacity = 24, cols = 768, kvd = kvHeads * headSize;
        int[] rows = [heads * headSize, kvd, kvd];
        var infos = new TensorInfo[3];
        var weights = new byte[3][];
        for (int i = 0; i < 3; i++)
        {
            infos[i] = new TensorInfo($"w{i}", types[i], [cols, rows[i]]);
            weights[i] = TestData.Matrix(types[i], 61 + 7 * i, rows[i], cols);
        }
        float[] x = TestData.Random(60 + tokens, (long)tokens * cols);
        var p = new AttentionParams(tokens, firstPosition, heads, kvHeads, headSize, 1f / MathF.Sqrt(headSize));
        var rope = new RopeParams(mode, dims, 10000f, 1f);
        float[] factors = FrequencyFactors(dims / 2);
        byte[] kSentinel = CacheBytes.Encode(cacheType, TestData.Random(26, (capacity + 1) * kvd, 50f));
        byte[] vSentinel = CacheBytes.Encode(cacheType, TestData.Random(27, (capacity + 1) * kvd, 50f));

        (float[] Q, float[] K, float[] V, byte[] KCache, byte[] VCache) Run(DeviceSession s, bool fused)
        {
            var xt = s.Floats(x);
            var outputs = new DeviceTensor[3];
            var targets = new MatMulTarget[3];
            for (int i = 0; i < 3; i++)
            {
                outputs[i] = Poisoned(s, (long)tokens * rows[i]);
                targets[i] = new MatMulTarget(s.Weights(infos[i], weights[i]).Tensor, rows[i], outputs[i]);
            }
            var kc = CacheBytes.Upload(s, cacheType, kSentinel);
            var vc = CacheBytes.Upload(s, cacheType, vSentinel);
            DeviceTensor? f = withFactors ? s.Floats([0f, 0f, 0f, .. factors]).Skip(3) : null;
            if (fused) s.Queue.MatMulRopeAndStoreKv(xt, cols, targets[0], targets[1], targets[2], kc.Skip(kvd), vc.Skip(kvd), p, rope, f);
            else // the reference: each matmul, then each rotation; the target's cache rows are checked against these k and v
            {
                foreach (var t in targets) s.Queue.MatMul(t.Weight, t.Rows, cols, xt, t.Output, tokens);
                foreach (var (t, h) in new[] { (outputs[0], heads), (outputs[1], kvHeads) })
                    if (f is { } ft) s.Queue.RopeWithFactors(t, tokens, h, headSize, firstPosition, rope, ft);
                    else s.Queue.Rope(t, tokens, h, headSize, firstPosition, rope);
            }
            return (s.Read(outputs[0], (long)tokens * rows[0]), s.Read(outputs[1], (long)tokens * kvd), s.Read(outputs[2], (long)tokens * kvd),
                    s.ReadBytes(kc, kSentinel.Length), s.ReadBytes(vc, vSentinel.Length));
        }

        string what = $"{backend} MatMulRopeAndStoreKv {string.Join('/', types)} {mode} dims {dims} {cacheType} cache, {tokens} tokens from {firstPosition}{(withFactors ? " with factors" : "")}";
        var expected = Run(reference, fused: false);
        var actual = Run(target, fused: true);
        TestData.AssertClose(expected.Q, actual.Q, OpConformanceTests.MatMulTolerance(types[0]), $"{what}: q");
        TestData.AssertClose(expected.K, actual.K, OpConformanceTests.MatMulTolerance(types[1]), $"{what}: k");
        TestData.AssertClose(expected.V, actual.V, OpConformanceTests.MatMulTolerance(types[2]), $"{what}: v");

        // Cache rows: the batch's hold the target's own k (rotated) and v, converted; every other byte is the sentinel.
        int rowBytes = (int)GgmlTypes.RowSize(cacheType, kvd);
        int from = (1 + firstPosition) * rowBytes, length = tokens * rowBytes;
        double cacheTolerance = cacheType == GgmlType.F16 ? 3e-3 : 1e-4;
        foreach (var (name, cache, sentinel, values) in new[] { ("K", actual.KCache, kSentinel, actual.K), ("V", actual.VCache, vSentinel, actual.V) })
        {
            CacheBytes.AssertHolds(cacheType, values, cache.AsSpan(from, length), cacheTolerance, $"{what}: {name} cache rows {firstPosition}..{firstPosition + tokens - 1}");
            AssertBytesEqual(sentinel.AsSpan(0, from), cache.AsSpan(0, from), $"{what}: {name} cache before row {firstPosition}");
            AssertBytesEqual(sentinel.AsSpan(from + length), cache.AsSpan(from + length), $"{what}: {name} cache from row {firstPosition + tokens}");
        }
    }

    /// <summary>Llama 3.1-like frequency factors with a few odd values (as <see cref="OpConformanceTests.RopeWithFactors_matches_cpu"/>).</summary>
    private static float[] FrequencyFactors(int pairs)
    {
        var factors = new float[pairs];
        for (int i = 0; i < pairs; i++) factors[i] = i < pairs / 4 ? 1f : i < pairs / 2 ? 1f + 14f * i / pairs : 8f;
        factors[1] = 0.5f;
        factors[^2] = 3.25f;
        return factors;
    }

    /// <summary>
    /// A mat-vec (or small matmul) that reads a fused op's output: weights [Rows × cols] in Q8_0 when cols is whole 32-element
    /// blocks (the type a GPU decodes with 8-bit activations, possibly quantized by the op that wrote them), F16 otherwise.
    /// </summary>
    internal sealed record NextMatVec(GgmlType Type, int Rows, int Cols, byte[] Weights)
    {
        /// <summary>A Q8_0 (or F16, or F32: the first <paramref name="target"/> supports) mat-vec reading <paramref name="cols"/> values.</summary>
        public static NextMatVec For(int cols, IComputeQueue target)
        {
            var type = cols % 32 == 0 && target.Supports(ComputeOp.MatMul, GgmlType.Q8_0) ? GgmlType.Q8_0
                : target.Supports(ComputeOp.MatMul, GgmlType.F16) ? GgmlType.F16 : GgmlType.F32;
            return new NextMatVec(type, 48, cols, TestData.Matrix(type, 99 + cols, 48, cols));
        }

        public DeviceTensor Place(DeviceSession s) => s.Weights(new TensorInfo("next", Type, [Cols, Rows]), Weights).Tensor;

        public DeviceTensor Run(DeviceSession s, DeviceTensor w, DeviceTensor x, int tokens)
        {
            var y = s.Zeros((long)tokens * Rows);
            s.Queue.MatMul(w, Rows, Cols, x, y, tokens);
            return y;
        }

        /// <summary>Asserts <paramref name="actual"/> is this mat-vec of <paramref name="input"/> (the backend's own fused-op output).</summary>
        public void AssertReads(float[] input, float[] actual, int tokens, string what)
            => TestData.AssertClose(OpConformanceTests.ExactMatMul(Type, Weights, Rows, Cols, input, tokens), actual,
                ProductAmplification * OpConformanceTests.MatMulTolerance(Type), OpConformanceTests.MatMulTolerance(Type),
                $"{what} MatMul {Type} [{Cols} x {Rows}] of its output vs exact");
    }

    private static bool IsKQuant(GgmlType type) => GgmlTypes.Get(type).BlockSize == 256;

    /// <summary>
    /// Row length of the MatMulAdd and MatMulSwiGlu cases: 768 for K-quants; for Q4_0 and Q8_0 768 with 64 rows (a multiple of
    /// 256, which a GPU may hold in a layout of its own) and 544 with 37 (not a multiple of 512: the slide); 544 for the rest.
    /// </summary>
    private static int FusedCols(GgmlType type, int rows)
        => IsKQuant(type) || (type is GgmlType.Q4_0 or GgmlType.Q8_0 && rows == 64) ? 768 : 544;

    /// <summary>An F32 tensor of <paramref name="count"/> elements whose every byte is <see cref="Poison"/>.</summary>
    private static DeviceTensor Poisoned(DeviceSession s, long count)
    {
        var t = s.Zeros(count);
        t.Buffer.Clear(Poison);
        return t;
    }

    private static void AssertPoisoned(ReadOnlySpan<byte> bytes, string what)
    {
        int at = bytes.IndexOfAnyExcept(Poison);
        if (at >= 0) Assert.Fail($"{what}: byte {at} is 0x{bytes[at]:X2}, was 0x{Poison:X2}: written outside the output");
    }

    private static void AssertBytesEqual(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        int at = expected.CommonPrefixLength(actual);
        if (at < expected.Length) Assert.Fail($"{what}: byte {at} is 0x{actual[at]:X2}, was 0x{expected[at]:X2}: written outside the batch's rows");
    }
}

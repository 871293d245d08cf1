using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using Xunit;
using static PluginEngine.Conformance.ConformanceBackends;

namespace PluginEngine.Conformance;

/// <summary>
/// The multi-sequence ops of <see cref="IComputeQueue"/> (API 1.2: <see cref="IComputeQueue.RopeAndStoreKvSegments"/> and
/// <see cref="IComputeQueue.AttentionSegments"/>, docs/batching.md) on every backend, the CPU included, against the CPU
/// running the single-sequence <see cref="IComputeQueue.RopeAndStoreKv"/> and <see cref="IComputeQueue.Attention"/> once per
/// segment on offset tensors. One scripted run of steps over three KV slots in one pair of caches: a 1-token decode
/// segment next to a 7-token prompt chunk, segments not in slot order, sequences joining and leaving between steps, a slot
/// reused from position 0 after its sequence ended (its old rows still there and never to be read), and positions that
/// differ per segment. The caches carry over from step to step on both sides, so a row stored in the wrong slot or at
/// the wrong position shows in a later step's attention; cache rows nothing wrote must keep their sentinel values.
/// </summary>
public abstract class SegmentOpConformanceTests
{
    private const int Heads = 4, KvHeads = 2, HeadSize = 64, Capacity = 24, Slots = 3, Kvd = KvHeads * HeadSize, Qd = Heads * HeadSize;

    /// <summary>Steps of (slot, tokens, restart) segments; restart: the slot starts over at position 0 (its sequence ended, a new one took it).</summary>
    private static readonly (int Slot, int Tokens, bool Restart)[][] Script =
    [
        [(0, 7, false)],                              // a prompt alone
        [(0, 1, false), (1, 7, false)],               // a decode token next to a 7-token prompt chunk
        [(1, 1, false), (2, 5, false), (0, 1, false)],// a third sequence joins; segments not in slot order
        [(2, 1, false), (1, 1, false)],               // slot 0's sequence left
        [(0, 3, true), (2, 1, false), (1, 2, false)], // slot 0 reused from position 0: its 9 old rows must not be seen
        [(1, 1, false), (0, 1, false), (2, 1, false)],// decode steps at positions 10, 4 and 8
    ];

    public static TheoryData<string, GgmlType, RopeMode> Cases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, RopeMode>();
            foreach (string backend in FusedOpConformanceTests.Backends())
                foreach (var cacheType in CacheBytes.Types)
                    foreach (var mode in new[] { RopeMode.Normal, RopeMode.NeoX })
                        data.Add(backend, cacheType, mode);
            return data;
        }
    }

    /// <summary>
    /// Attention output tolerance (relative to the reference's rms) per cache type. F16: half rounding. Q8_0 and Q4_0: each side
    /// quantizes the keys it rotated itself, so a key whose value sits on a level's edge may take the neighbouring level on one
    /// side (a Q4_0 step is an eighth of its block's largest value), which moves its scores and so the output; on the CPU, whose
    /// segment ops are its single-sequence kernels, the two are the same bits.
    /// </summary>
    private static double AttentionTolerance(GgmlType cacheType) => cacheType switch
    {
        GgmlType.F16 => 3e-3,
        GgmlType.Q8_0 => 1e-2,
        GgmlType.Q4_0 => 6e-2,
        _ => 1e-4,
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Segment_ops_match_the_single_sequence_ops_per_segment(string backend, GgmlType cacheType, RopeMode mode)
    {
        using var target = new DeviceSession(Require(backend));
        RequireOp(target.Queue, ComputeOp.Rope, GgmlType.F32);
        RequireOp(target.Queue, ComputeOp.Attention, cacheType);
        RequireOp(target.Queue, ComputeOp.Convert, cacheType);
        using var reference = new DeviceSession(Reference);
        var rope = new RopeParams(mode, HeadSize, 10000f, 1f);
        var shape = new AttentionParams(0, 0, Heads, KvHeads, HeadSize, 1f / MathF.Sqrt(HeadSize));

        // Both caches start one row in (a non-zero offset, as a layer's cache in a shared buffer) and hold finite sentinels.
        int cacheRows = Slots * Capacity + 1;
        byte[] kSentinel = CacheBytes.Encode(cacheType, TestData.Random(31, (long)cacheRows * Kvd, 50f));
        byte[] vSentinel = CacheBytes.Encode(cacheType, TestData.Random(32, (long)cacheRows * Kvd, 50f));
        var tk = CacheBytes.Upload(target, cacheType, kSentinel);
        var tv = CacheBytes.Upload(target, cacheType, vSentinel);
        var rk = CacheBytes.Upload(reference, cacheType, kSentinel);
        var rv = CacheBytes.Upload(reference, cacheType, vSentinel);
        var written = new bool[cacheRows]; // rows some step stored (the others must keep their sentinel bytes)

        var positions = new int[Slots];
        var next = FusedOpConformanceTests.NextMatVec.For(Qd, target.Queue);
        var nextWeights = next.Place(target);
        for (int step = 0; step < Script.Length; step++)
        {
            var segments = new SequenceSegment[Script[step].Length];
            int rows = 0;
            for (int i = 0; i < segments.Length; i++)
            {
                var (slot, tokens, restart) = Script[step][i];
                if (restart) positions[slot] = 0;
                segments[i] = new SequenceSegment(rows, tokens, positions[slot], slot * Capacity);
                for (int t = 0; t < tokens; t++) written[1 + slot * Capacity + positions[slot] + t] = true;
                rows += tokens;
            }
            float[] q = TestData.Random(100 + step, (long)rows * Qd);
            float[] k = TestData.Random(200 + step, (long)rows * Kvd);
            float[] v = TestData.Random(300 + step, (long)rows * Kvd);

            // The target: both segment ops over the whole batch.
            var (tq, tkNew, tvNew, tOut) = (target.Floats(q), target.Floats(k), target.Floats(v), target.Zeros((long)rows * Qd));
            target.Queue.RopeAndStoreKvSegments(tq, tkNew, tvNew, tk.Skip(Kvd), tv.Skip(Kvd), segments, shape, rope, null);
            target.Queue.AttentionSegments(tq, tk.Skip(Kvd), tv.Skip(Kvd), tOut, segments, shape);

            // The reference: the single-sequence ops, one segment at a time, on tensors offset to its rows and its slot.
            var (rq, rkNew, rvNew, rOut) = (reference.Floats(q), reference.Floats(k), reference.Floats(v), reference.Zeros((long)rows * Qd));
            foreach (var s in segments)
            {
                var p = shape with { Tokens = s.Tokens, FirstPosition = s.FirstPosition };
                var kSlot = rk.Skip((long)(1 + s.CacheRow) * Kvd);
                var vSlot = rv.Skip((long)(1 + s.CacheRow) * Kvd);
                reference.Queue.RopeAndStoreKv(rq.Skip((long)s.FirstRow * Qd), rkNew.Skip((long)s.FirstRow * Kvd), rvNew.Skip((long)s.FirstRow * Kvd), kSlot, vSlot, p, rope, null);
                reference.Queue.Attention(rq.Skip((long)s.FirstRow * Qd), kSlot, vSlot, rOut.Skip((long)s.FirstRow * Qd), p);
            }

            string what = $"{backend} segment ops {mode} {cacheType} cache, step {step} ({string.Join(", ", segments.Select(s => $"{s.Tokens} at {s.FirstPosition} in slot {s.CacheRow / Capacity}"))})";
            TestData.AssertClose(reference.Read(rq, q.Length), target.Read(tq, q.Length), 1e-4, $"{what}: rotated q");
            float[] output = target.Read(tOut, (long)rows * Qd);
            TestData.AssertClose(reference.Read(rOut, (long)rows * Qd), output, AttentionTolerance(cacheType), $"{what}: attention output");
            // The output projection reads the batch's rows next (a GPU quantizes them for its 8-bit matmuls in the same pass).
            if (target.Queue.Supports(ComputeOp.MatMul, next.Type))
                next.AssertReads(output, target.Read(next.Run(target, nextWeights, tOut, rows), (long)rows * next.Rows), rows, $"{what}, then");
            foreach (var s in Script[step]) positions[s.Slot] += s.Tokens;
        }

        // The caches: the rows written equal the reference's (converted; a quantized row's values within a step of the reference's,
        // as a key rotated with other rounding may take a neighbouring level), and every other row is its sentinel, byte for byte.
        double tolerance = cacheType == GgmlType.F16 ? 3e-3 : 1e-4;
        int rowBytes = (int)GgmlTypes.RowSize(cacheType, Kvd);
        foreach (var (name, actual, expected, sentinel) in new[]
                 { ("K", target.ReadBytes(tk, kSentinel.Length), reference.ReadBytes(rk, kSentinel.Length), kSentinel),
                   ("V", target.ReadBytes(tv, vSentinel.Length), reference.ReadBytes(rv, vSentinel.Length), vSentinel) })
        {
            for (int row = 0; row < cacheRows; row++)
            {
                var a = actual.AsSpan(row * rowBytes, rowBytes);
                if (written[row])
                    CacheBytes.AssertHolds(cacheType, CacheBytes.Decode(cacheType, expected.AsSpan(row * rowBytes, rowBytes)), a, tolerance,
                        $"{backend} segment ops {mode} {cacheType}: {name} cache row {row - 1} (slot {(row - 1) / Capacity}, position {(row - 1) % Capacity})");
                else if (!a.SequenceEqual(sentinel.AsSpan(row * rowBytes, rowBytes)))
                    Assert.Fail($"{backend} segment ops {mode} {cacheType}: {name} cache row {row - 1} was written, but no segment stores there");
            }
        }
    }
}

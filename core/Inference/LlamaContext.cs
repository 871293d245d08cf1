using PluginEngine.Abstractions;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Core.Plugins;

namespace PluginEngine.Core.Inference;

/// <summary>Options of an inference context.</summary>
/// <param name="ContextSize">Positions the KV cache holds (≤ the model's context length).</param>
/// <param name="BatchSize">Most tokens evaluated in one forward pass (prompt processing is split into batches of this size).</param>
/// <param name="KvCacheType">
/// F16 (default, like llama.cpp), F32, or the quantized Q8_0 or Q4_0 (about half and a quarter of F16's bytes; the model's head
/// size must be a multiple of 32). A quantized cache stores each position's K (and V) row of KvDim elements as GGUF blocks, so
/// position p of a slot starts at byte p × RowSize(type, KvDim) (docs/batching.md#quantized-kv-cache). See <see cref="KvCacheTypes"/>.
/// </param>
public sealed record ContextOptions(int ContextSize = 2048, int BatchSize = 512, GgmlType KvCacheType = GgmlType.F16);

/// <summary>Counters of activation copies between devices (the price of partial offload and op fallback).</summary>
public sealed partial class TransferCounters
{
    public long Copies { get; internal set; }
    public long Bytes { get; internal set; }
    public override string ToString() => $"{Copies} copies, {Bytes:N0} B";
}

/// <summary>One sequence's part of <see cref="LlamaContext.EvaluateBatch"/> (docs/batching.md#the-batched-context).</summary>
/// <param name="Slot">The sequence's KV slot (0 .. <see cref="LlamaContext.Sequences"/> − 1); its tokens go at the slot's next positions.</param>
/// <param name="Tokens">How many of the batch's tokens are this sequence's (≥ 1), following the previous sequence's.</param>
/// <param name="WantsLogits">Whether the logits of its last token are wanted.</param>
public readonly record struct BatchSequence(int Slot, int Tokens, bool WantsLogits);

/// <summary>The context is full: evaluating more tokens would exceed its size.</summary>
public sealed class ContextOverflowException(string message) : Exception(message);

/// <summary>
/// The llama forward pass, written once against <see cref="IComputeQueue"/> and readable top to bottom.
/// Holds the KV cache and the activation buffers of every device the schedule uses.
/// Shapes are row-major [rows, columns] with n = tokens in the current batch, d = embedding length,
/// qd = heads × head size, kvd = kv heads × head size, ff = feed-forward length, V = vocabulary, S = sequence slots.
/// A context holds <see cref="Sequences"/> KV slots of <see cref="ContextSize"/> positions each: <see cref="Evaluate"/> is the
/// single-sequence API (slot 0), <see cref="EvaluateBatch"/> runs tokens of several slots in one forward pass
/// (docs/batching.md#the-batched-context).
/// </summary>
public sealed class LlamaContext : IDisposable
{
    private readonly LlamaHyperParameters _hp;
    private readonly LlamaWeights _w;
    private readonly LayerSchedule _schedule;
    private readonly Dictionary<IBackendDevice, DeviceState> _states = [];
    private readonly MatMulTarget[] _sharedTargets = new MatMulTarget[3]; // MatMulShared's argument, reused by every layer
    private readonly float[] _staging; // host staging for cross-device copies: [BatchSize, max(d, qd, ff, V)]
    private readonly int[] _positions;                 // [S] positions cached per slot
    private readonly SequenceSegment[] _segments;      // [S] the current batch's segments, reused by every step
    private readonly int[] _logitRows;                 // [max(S, BatchSize)] batch rows whose logits are wanted, reused
    private readonly bool[] _slotInBatch;              // [S] validation scratch: a slot appears once per batch

    public LlamaContext(LlamaHyperParameters hp, LlamaWeights weights, LayerSchedule schedule, ContextOptions options)
        : this(hp, weights, schedule, options, sequences: 1)
    {
    }

    /// <summary>A context with <paramref name="sequences"/> KV slots of <see cref="ContextOptions.ContextSize"/> positions each.</summary>
    public LlamaContext(LlamaHyperParameters hp, LlamaWeights weights, LayerSchedule schedule, ContextOptions options, int sequences)
    {
        if (sequences <= 0) throw new ArgumentOutOfRangeException(nameof(sequences), sequences, "a context needs at least one sequence slot");
        if (options.ContextSize <= 0 || options.ContextSize > hp.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(options), $"context size {options.ContextSize} must be in 1..{hp.ContextLength} (the model's context length)");
        if (options.BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(options), "batch size must be positive");
        if (KvCacheTypes.Problem(options.KvCacheType, hp) is { } kvProblem) throw new ArgumentException(kvProblem, nameof(options));
        _hp = hp;
        _w = weights;
        _schedule = schedule;
        Options = options;
        BatchSize = Math.Min(options.BatchSize, options.ContextSize * sequences); // one sequence cannot use more than its context
        Sequences = sequences;
        _positions = new int[sequences];
        _segments = new SequenceSegment[sequences];
        _logitRows = new int[Math.Max(sequences, BatchSize)];
        _slotInBatch = new bool[sequences];
        _staging = new float[(long)BatchSize * MaxRowWidth];
        schedule.RequireOps(options.KvCacheType); // no CPU backend: refuse now, listing the missing ops, rather than fail mid-run
        OpFallbackPlan = schedule.OpFallbacks(options.KvCacheType);
        try
        {
            for (int l = 0; l < hp.BlockCount; l++) State(schedule.LayerDevices[l]);
            State(schedule.OutputDevice);
            // Op fallbacks run on the CPU: allocate its activations, scratch and the KV cache it keeps for other devices now.
            if (OpFallbackPlan.Count > 0 && schedule.Cpu is { } cpu) State(cpu).EnsureScratch();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public ContextOptions Options { get; }

    /// <summary>Tokens per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>Positions already in the KV cache (of slot 0, the one <see cref="Evaluate"/> uses).</summary>
    public int Position { get => _positions[0]; private set => _positions[0] = value; }

    /// <summary>Capacity of the KV cache (of each slot).</summary>
    public int ContextSize => Options.ContextSize;

    /// <summary>KV slots: sequences that can be evaluated together by <see cref="EvaluateBatch"/>.</summary>
    public int Sequences { get; }

    /// <summary>Positions cached in <paramref name="slot"/>.</summary>
    public int SequencePosition(int slot) => _positions[slot];

    /// <summary>Forgets <paramref name="slot"/>'s cached positions: the slot is free for a new sequence (its old rows are overwritten, never read).</summary>
    public void ClearSequence(int slot) => _positions[slot] = 0;

    public int VocabularySize => _hp.VocabularySize;

    /// <summary>Activation copies between devices so far.</summary>
    public TransferCounters Transfers { get; } = new();

    /// <summary>What runs on the CPU because a device lacks the op (one line per device; empty when nothing does).</summary>
    public IReadOnlyList<string> OpFallbackPlan { get; }

    /// <summary>How many times each op ran on the CPU instead of its layer's device so far.</summary>
    public IReadOnlyDictionary<ComputeOp, long> OpFallbackCounts => _opFallbackCounts;

    private readonly Dictionary<ComputeOp, long> _opFallbackCounts = [];

    /// <summary>Layers whose KV cache each device holds (a device that cannot attend over the cache type leaves its layers' cache to the CPU).</summary>
    public IReadOnlyDictionary<IBackendDevice, int> KvCacheLayers => _states.Where(kv => kv.Value.KvLayers.Count > 0).ToDictionary(kv => kv.Key, kv => kv.Value.KvLayers.Count);

    /// <summary>Bytes of device memory this context allocated (activations + KV cache), per device.</summary>
    public IReadOnlyDictionary<IBackendDevice, long> AllocatedBytes => _states.ToDictionary(kv => kv.Key, kv => kv.Value.AllocatedBytes);

    private int MaxRowWidth => Math.Max(Math.Max(_hp.EmbeddingLength, _hp.QDim), Math.Max(_hp.FeedForwardLength, _hp.VocabularySize));

    /// <summary>Forgets every cached position (of every slot).</summary>
    public void Reset() => Array.Clear(_positions);

    /// <summary>
    /// Keeps the first <paramref name="position"/> cached positions and forgets the rest (the next tokens overwrite them):
    /// how a conversation reuses the part of the cache its new prompt shares with the previous one.
    /// </summary>
    public void Rewind(int position)
    {
        if (position < 0 || position > Position)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"can rewind only to 0..{Position} (the cached positions)");
        Position = position;
    }

    /// <summary>
    /// Evaluates <paramref name="tokens"/> at the next positions and writes logits: the last token's [V] into
    /// <paramref name="logits"/>, or every token's [tokens, V] when <paramref name="allPositions"/>.
    /// </summary>
    public void Evaluate(ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions = false)
    {
        int vocab = _hp.VocabularySize;
        if (tokens.IsEmpty) throw new ArgumentException("no tokens to evaluate", nameof(tokens));
        long needed = allPositions ? (long)tokens.Length * vocab : vocab;
        if (logits.Length < needed) throw new ArgumentException($"logits span holds {logits.Length} floats; {needed} needed", nameof(logits));
        if (Position + tokens.Length > ContextSize)
            throw new ContextOverflowException($"context overflow: {Position} cached + {tokens.Length} new tokens > context size {ContextSize}");
        foreach (int t in tokens)
            if ((uint)t >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {t} is outside the vocabulary (0..{vocab - 1})");

        int firstPosition = Position;
        for (int start = 0; start < tokens.Length; start += BatchSize)
        {
            int n = Math.Min(BatchSize, tokens.Length - start);
            bool last = start + n == tokens.Length;
            Span<float> dst = allPositions ? logits.Slice(start * vocab, n * vocab) : last ? logits[..vocab] : default;
            _segments[0] = new SequenceSegment(0, n, Position, 0);
            ReadOnlySpan<int> rows = allPositions ? _logitRows.AsSpan(0, n) : last ? _logitRows.AsSpan(0, 1) : default;
            if (allPositions) for (int i = 0; i < n; i++) _logitRows[i] = i;
            else _logitRows[0] = n - 1;
            Forward(tokens.Slice(start, n), _segments.AsSpan(0, 1), rows, dst);
            Position += n;
        }
        // Never hand NaN/Inf to a sampler or a logits file as if it were output.
        NonFiniteLogitsException.ThrowIfAny(logits[..(int)needed], vocab, allPositions ? firstPosition : firstPosition + tokens.Length - 1);
    }

    /// <summary>
    /// Evaluates tokens of several sequences in one forward pass (docs/batching.md#the-batched-context):
    /// <paramref name="tokens"/> holds each entry of <paramref name="sequences"/>'s tokens in turn (Σ Tokens ≤ <see cref="BatchSize"/>),
    /// each going to its slot's next positions; every slot appears at most once. For each entry that wants logits, in order,
    /// the logits of its last token are written as one [V] row of <paramref name="logits"/>. Returns the rows written.
    /// Nothing is evaluated when a check fails (a slot would overflow: <see cref="ContextOverflowException"/>).
    /// </summary>
    public int EvaluateBatch(ReadOnlySpan<int> tokens, ReadOnlySpan<BatchSequence> sequences, Span<float> logits)
    {
        int vocab = _hp.VocabularySize;
        if (sequences.IsEmpty) throw new ArgumentException("no sequences to evaluate", nameof(sequences));
        if (tokens.Length > BatchSize) throw new ArgumentException($"{tokens.Length} tokens exceed the batch size {BatchSize}", nameof(tokens));
        int rows = 0, wanted = 0;
        Array.Clear(_slotInBatch);
        try
        {
            foreach (var q in sequences)
            {
                if ((uint)q.Slot >= (uint)Sequences) throw new ArgumentOutOfRangeException(nameof(sequences), $"slot {q.Slot} is outside 0..{Sequences - 1}");
                if (_slotInBatch[q.Slot]) throw new ArgumentException($"slot {q.Slot} appears twice in one batch", nameof(sequences));
                _slotInBatch[q.Slot] = true;
                if (q.Tokens <= 0) throw new ArgumentException($"slot {q.Slot}: a sequence in a batch needs at least one token", nameof(sequences));
                if (_positions[q.Slot] + q.Tokens > ContextSize)
                    throw new ContextOverflowException($"context overflow in slot {q.Slot}: {_positions[q.Slot]} cached + {q.Tokens} new tokens > context size {ContextSize}");
                rows += q.Tokens;
                if (q.WantsLogits) wanted++;
            }
        }
        finally { Array.Clear(_slotInBatch); }
        if (rows != tokens.Length) throw new ArgumentException($"the sequences hold {rows} tokens; {tokens.Length} given", nameof(tokens));
        if (logits.Length < (long)wanted * vocab) throw new ArgumentException($"logits span holds {logits.Length} floats; {(long)wanted * vocab} needed", nameof(logits));
        foreach (int t in tokens)
            if ((uint)t >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {t} is outside the vocabulary (0..{vocab - 1})");

        int row = 0, w = 0;
        for (int i = 0; i < sequences.Length; i++)
        {
            var q = sequences[i];
            _segments[i] = new SequenceSegment(row, q.Tokens, _positions[q.Slot], q.Slot * ContextSize);
            row += q.Tokens;
            if (q.WantsLogits) _logitRows[w++] = row - 1;
        }
        Forward(tokens, _segments.AsSpan(0, sequences.Length), _logitRows.AsSpan(0, wanted), logits[..(wanted * vocab)]);
        w = 0;
        foreach (var q in sequences)
        {
            _positions[q.Slot] += q.Tokens;
            if (q.WantsLogits) { NonFiniteLogitsException.ThrowIfAny(logits.Slice(w * vocab, vocab), vocab, _positions[q.Slot] - 1); w++; }
        }
        return wanted;
    }

    /// <summary>
    /// One batch of n tokens (the rows of <paramref name="segments"/>, one per sequence) through the whole network. Writes the
    /// logits of batch rows <paramref name="logitRows"/> (ascending) to <paramref name="logits"/> [logitRows, V]; none when empty.
    /// Does not advance positions (the callers do).
    /// </summary>
    private void Forward(ReadOnlySpan<int> tokens, ReadOnlySpan<SequenceSegment> segments, ReadOnlySpan<int> logitRows, Span<float> logits)
    {
        int n = tokens.Length, d = _hp.EmbeddingLength, qd = _hp.QDim, kvd = _hp.KvDim;
        // Heads, KvHeads, HeadSize and Scale of every segment; Tokens/FirstPosition are the first segment's (the single-sequence ops read them)
        var attention = new AttentionParams(segments[0].Tokens, segments[0].FirstPosition, _hp.HeadCount, _hp.KvHeadCount, _hp.HeadSize, 1f / MathF.Sqrt(_hp.HeadSize));

        // x[n, d] = token_embd[tokens]
        var cur = State(_w.TokenEmbedding.Device);
        cur.Queue.GetRows(Weight(_w.TokenEmbedding), d, tokens, cur.X);

        for (int l = 0; l < _hp.BlockCount; l++)
        {
            var layer = _w.Layers[l];
            var s = State(_schedule.LayerDevices[l]);
            if (s != cur) { CopyActivations(cur, cur.X, s, s.X, (long)n * d); cur = s; }

            // Attention block: xb = norm(x); q,k,v = xb·W; rope; cache k,v; att = attention(q, K, V); x += att·Wo
            RmsNorm(s, s.X, layer.AttnNorm, s.Xb, n);                                      // xb[n, d]
            bool stored = MatMulRopeAndStoreKv(s, l, layer, segments, attention);          // one sequence, no biases: q, k, v projected, rotated, stored
            if (!stored)
            {
                MatMulShared(s, s.Xb, n, (layer.Q, s.Q), (layer.K, s.K), (layer.V, s.V));  // q[n, qd], k[n, kvd], v[n, kvd]
                if (layer.QBias is { } qb) AddBias(s, s.Q, qb, n, qd);
                if (layer.KBias is { } kb) AddBias(s, s.K, kb, n, kvd);
                if (layer.VBias is { } vb) AddBias(s, s.V, vb, n, kvd);
            }
            AttentionWithCache(s, l, segments, attention, stored);                         // q, k rotated; K[slot, pos..], V[slot, pos..] = k, v; att[n, qd]
            MatMulAdd(s, layer.AttnOutput, s.Att, s.X, n);                                 // x += att·Wo

            // Feed-forward block: x += (silu(xb·Wgate) · (xb·Wup))·Wdown with xb = norm(x)
            RmsNorm(s, s.X, layer.FfnNorm, s.Xb, n);
            MatMulSwiGlu(s, layer.FfnGate, layer.FfnUp, n);                                // gate[n, ff] = silu(xb·Wgate)·(xb·Wup)
            MatMulAdd(s, layer.FfnDown, s.Gate, s.X, n);                                   // x += gate·Wdown
        }
        if (logitRows.IsEmpty) return;

        // logits[rows, V] = norm(x[rows]) · Woutᵀ for the wanted rows (every token, the last one, or each sequence's last)
        var o = State(_schedule.OutputDevice);
        if (o != cur) { CopyActivations(cur, cur.X, o, o.X, (long)n * d); cur = o; }
        int rows = logitRows.Length;
        var xRows = GatherRows(o, logitRows);                                              // [rows, d]
        RmsNorm(o, xRows, _w.OutputNorm, o.Xb, rows);
        MatMul(o, _w.Output, o.Xb, o.Logits, rows);
        o.Queue.Download(o.Logits, logits[..(rows * _hp.VocabularySize)]);
    }

    /// <summary>
    /// The rows of x [n, d] whose logits are wanted, as one contiguous [rows, d] tensor: a view when they already are
    /// contiguous, else compacted in place to x's first rows (row i ← row r_i with r_i ≥ i, in ascending order, so no
    /// source row is overwritten before it is read; x is dead after this). Each move is an F32 → F32 Convert.
    /// </summary>
    private DeviceTensor GatherRows(DeviceState o, ReadOnlySpan<int> rows)
    {
        int d = _hp.EmbeddingLength;
        if (rows[^1] - rows[0] == rows.Length - 1) return o.X.Skip((long)rows[0] * d);
        bool convert = o.Device == _schedule.Cpu || o.Queue.Supports(ComputeOp.Convert, GgmlType.F32);
        for (int i = 0; i < rows.Length; i++)
        {
            if (rows[i] == i) continue;
            var src = o.X.Skip((long)rows[i] * d);
            var dst = o.X.Skip((long)i * d);
            if (convert) o.Queue.Convert(src, dst, d);
            else CopyActivations(o, src, o, dst, d); // through the host (counted), as any op the device lacks
        }
        return o.X;
    }

    /// <summary>y[n, rows(w)] = x[n, cols(w)]·wᵀ on the weight's device; copies activations there and back when it is not <paramref name="s"/>'s.</summary>
    private void MatMul(DeviceState s, TensorBinding w, DeviceTensor x, DeviceTensor y, int n)
    {
        long cols = w.Tensor.Dims[0], rows = w.Tensor.RowCount;
        if (w.Device == s.Device)
        {
            s.Queue.MatMul(Weight(w), rows, cols, x, y, n);
            return;
        }
        var f = State(w.Device);
        f.EnsureScratch();
        CopyActivations(s, x, f, f.ScratchIn, n * cols);
        f.Queue.MatMul(Weight(w), rows, cols, f.ScratchIn, f.ScratchOut, n);
        CopyActivations(f, f.ScratchOut, s, y, n * rows);
    }

    /// <summary>
    /// Several weights on the same activations x [n, cols] (q/k/v): one <see cref="IComputeQueue.MatMulShared"/> for those on
    /// <paramref name="s"/>'s device, the others one by one through <see cref="MatMul(DeviceState, TensorBinding, DeviceTensor, DeviceTensor, int)"/>.
    /// </summary>
    private void MatMulShared(DeviceState s, DeviceTensor x, int n, params ReadOnlySpan<(TensorBinding W, DeviceTensor Y)> targets)
    {
        var local = _sharedTargets.AsSpan(0, targets.Length);
        int count = 0;
        long cols = targets[0].W.Tensor.Dims[0];
        foreach (var (w, y) in targets)
        {
            if (w.Device == s.Device && w.Tensor.Dims[0] == cols) local[count++] = new MatMulTarget(Weight(w), w.Tensor.RowCount, y);
            else MatMul(s, w, x, y, n);
        }
        if (count > 0) s.Queue.MatMulShared(x, cols, n, local[..count]);
    }

    /// <summary>
    /// gate[n, ff] = silu(xb·Wgateᵀ)·(xb·Wupᵀ), with up[n, ff] as scratch: one fused op when both weights are on
    /// <paramref name="s"/>'s device, else the two matmuls (each where its weight is) and SiluMul.
    /// </summary>
    private void MatMulSwiGlu(DeviceState s, TensorBinding gate, TensorBinding up, int n)
    {
        long rows = gate.Tensor.RowCount, cols = gate.Tensor.Dims[0];
        if (gate.Device == s.Device && up.Device == s.Device && up.Tensor.RowCount == rows && s.Runs(ComputeOp.SiluMul))
        {
            s.Queue.MatMulSwiGlu(Weight(gate), Weight(up), rows, cols, s.Xb, s.Gate, s.Up, n);
            return;
        }
        MatMul(s, gate, s.Xb, s.Gate, n);
        MatMul(s, up, s.Xb, s.Up, n);
        SiluMul(s, s.Gate, s.Up, n * rows);
    }

    /// <summary>y[n, rows(w)] += x[n, cols(w)]·wᵀ; through Xb as scratch when the weight is on another device.</summary>
    private void MatMulAdd(DeviceState s, TensorBinding w, DeviceTensor x, DeviceTensor y, int n)
    {
        long cols = w.Tensor.Dims[0], rows = w.Tensor.RowCount;
        if (w.Device == s.Device && s.Runs(ComputeOp.Add))
        {
            s.Queue.MatMulAdd(Weight(w), rows, cols, x, y, n, s.Xb);
            return;
        }
        MatMul(s, w, x, s.Xb, n);
        Add(s, y, s.Xb, n * rows);
    }

    /// <summary>
    /// q, k, v = xb·W, rotated, and k, v stored into layer <paramref name="layer"/>'s cache in one fused op
    /// (<see cref="IComputeQueue.MatMulRopeAndStoreKv"/>, API 1.3) when the step allows it: one sequence, no q/k/v biases, the
    /// three weights and the cache on <paramref name="s"/>'s device, RoPE fused there. False (nothing done) otherwise: the
    /// caller projects, adds the biases, rotates and stores step by step.
    /// </summary>
    private bool MatMulRopeAndStoreKv(DeviceState s, int layer, LlamaLayerWeights w, ReadOnlySpan<SequenceSegment> segments, AttentionParams p)
    {
        if (segments.Length != 1 || !s.FusesProjectionWithRope || s.KvOnCpu || w.QBias is not null || w.KBias is not null || w.VBias is not null
            || w.Q.Device != s.Device || w.K.Device != s.Device || w.V.Device != s.Device
            || w.K.Tensor.Dims[0] != w.Q.Tensor.Dims[0] || w.V.Tensor.Dims[0] != w.Q.Tensor.Dims[0] || !FusesRope(s))
            return false;
        var one = segments[0];
        long kvd = _hp.KvDim;
        var (kCache, vCache) = s.Cache(layer);
        s.Queue.MatMulRopeAndStoreKv(s.Xb, w.Q.Tensor.Dims[0], new MatMulTarget(Weight(w.Q), w.Q.Tensor.RowCount, s.Q),
                                     new MatMulTarget(Weight(w.K), w.K.Tensor.RowCount, s.K), new MatMulTarget(Weight(w.V), w.V.Tensor.RowCount, s.V),
                                     kCache.Skip((long)one.CacheRow * kvd), vCache.Skip((long)one.CacheRow * kvd),
                                     p with { Tokens = one.Tokens, FirstPosition = one.FirstPosition }, _hp.Rope, s.RopeFactors);
        return true;
    }

    /// <summary>Whether <paramref name="s"/>'s device rotates and stores in one op (<see cref="IComputeQueue.RopeAndStoreKv"/>), frequency factors included.</summary>
    private bool FusesRope(DeviceState s) => (_w.RopeFrequencyFactors is null || s.RopeFactors is not null) && s.Runs(ComputeOp.Rope);

    /// <summary>
    /// Rotates q and k of this batch and stores k and v into the layer's cache at the batch's positions: one fused op on
    /// <paramref name="s"/>'s device unless the model's frequency factors must be applied elsewhere (then the steps one by one).
    /// </summary>
    private void RopeAndStoreKv(DeviceState s, DeviceTensor kCache, DeviceTensor vCache, ReadOnlySpan<SequenceSegment> segments, AttentionParams p)
    {
        int qd = _hp.QDim, kvd = _hp.KvDim;
        if (FusesRope(s))
        {
            if (segments.Length == 1) // the single-sequence op, exactly as before batching existed
            {
                var one = segments[0];
                s.Queue.RopeAndStoreKv(s.Q, s.K, s.V, kCache.Skip((long)one.CacheRow * kvd), vCache.Skip((long)one.CacheRow * kvd),
                                       p with { Tokens = one.Tokens, FirstPosition = one.FirstPosition }, _hp.Rope, s.RopeFactors);
            }
            else s.Queue.RopeAndStoreKvSegments(s.Q, s.K, s.V, kCache, vCache, segments, p, _hp.Rope, s.RopeFactors);
            return;
        }
        foreach (var seg in segments) // the steps one by one, each where it can run
        {
            var q = s.Q.Skip((long)seg.FirstRow * qd);
            var k = s.K.Skip((long)seg.FirstRow * kvd);
            var v = s.V.Skip((long)seg.FirstRow * kvd);
            Rope(s, q, seg.Tokens, _hp.HeadCount, seg.FirstPosition);
            Rope(s, k, seg.Tokens, _hp.KvHeadCount, seg.FirstPosition);
            long at = (long)(seg.CacheRow + seg.FirstPosition) * kvd;
            s.Queue.Convert(k, kCache.Skip(at), (long)seg.Tokens * kvd);
            s.Queue.Convert(v, vCache.Skip(at), (long)seg.Tokens * kvd);
        }
    }

    /// <summary>att = attention(q, K, V) per segment, each over its own slot: the single-sequence op for one segment, else the segment op.</summary>
    private void Attend(DeviceState s, DeviceTensor kCache, DeviceTensor vCache, ReadOnlySpan<SequenceSegment> segments, AttentionParams p)
    {
        if (segments.Length == 1)
        {
            var one = segments[0];
            long kvd = _hp.KvDim;
            s.Queue.Attention(s.Q, kCache.Skip(one.CacheRow * kvd), vCache.Skip(one.CacheRow * kvd), s.Att,
                              p with { Tokens = one.Tokens, FirstPosition = one.FirstPosition });
        }
        else s.Queue.AttentionSegments(s.Q, kCache, vCache, s.Att, segments, p);
    }

    /// <summary>
    /// Rotates x [n, heads, headSize] in place on <paramref name="s"/>'s device; with frequency factors, on the CPU (copying
    /// x there and back, counted) when that device cannot rotate with them.
    /// </summary>
    private void Rope(DeviceState s, DeviceTensor x, int n, int heads, int pos)
    {
        if (_w.RopeFrequencyFactors is null && s.Runs(ComputeOp.Rope))
        {
            s.Queue.Rope(x, n, heads, _hp.HeadSize, pos, _hp.Rope);
            return;
        }
        if (_w.RopeFrequencyFactors is not null && s.RopeFactors is { } factors)
        {
            s.Queue.RopeWithFactors(x, n, heads, _hp.HeadSize, pos, _hp.Rope, factors);
            return;
        }
        var cpu = OnCpu(s, _w.RopeFrequencyFactors is null ? ComputeOp.Rope : ComputeOp.RopeFrequencyFactors);
        long count = (long)n * heads * _hp.HeadSize;
        CopyActivations(s, x, cpu, cpu.ScratchIn, count);
        if (_w.RopeFrequencyFactors is null) cpu.Queue.Rope(cpu.ScratchIn, n, heads, _hp.HeadSize, pos, _hp.Rope);
        else
        {
            var cpuFactors = cpu.RopeFactors
                ?? throw new NotSupportedException($"neither {s.Device.Description.Backend} nor the CPU backend ({cpu.Device.Description.Name}) runs RoPE with frequency factors");
            cpu.Queue.RopeWithFactors(cpu.ScratchIn, n, heads, _hp.HeadSize, pos, _hp.Rope, cpuFactors);
        }
        CopyActivations(cpu, cpu.ScratchIn, s, x, count);
    }

    /// <summary>
    /// The attention block between the q/k/v projections and the output projection: rotate q and k, store k and v in layer
    /// <paramref name="layer"/>'s cache, att = attention(q, K, V). Where <paramref name="s"/>'s device cannot attend over or
    /// store into a cache of the context's type, that layer's cache lives on the CPU: q, k and v are copied there, the whole
    /// block runs there, and att is copied back. <paramref name="stored"/>: q and k are already rotated and k, v stored
    /// (<see cref="MatMulRopeAndStoreKv(DeviceState, int, LlamaLayerWeights, ReadOnlySpan{SequenceSegment}, AttentionParams)"/>).
    /// </summary>
    private void AttentionWithCache(DeviceState s, int layer, ReadOnlySpan<SequenceSegment> segments, AttentionParams p, bool stored)
    {
        if (!s.KvOnCpu)
        {
            var (kCache, vCache) = s.Cache(layer);                                         // [S × ctx, kvd] each
            if (!stored) RopeAndStoreKv(s, kCache, vCache, segments, p);
            Attend(s, kCache, vCache, segments, p);
            return;
        }
        var cpu = OnCpu(s, ComputeOp.Attention);
        int n = segments[^1].FirstRow + segments[^1].Tokens;
        long q = (long)n * _hp.QDim, kv = (long)n * _hp.KvDim;
        CopyActivations(s, s.Q, cpu, cpu.Q, q);
        CopyActivations(s, s.K, cpu, cpu.K, kv);
        CopyActivations(s, s.V, cpu, cpu.V, kv);
        var (k, v) = cpu.Cache(layer);
        RopeAndStoreKv(cpu, k, v, segments, p);
        Attend(cpu, k, v, segments, p);
        CopyActivations(cpu, cpu.Att, s, s.Att, q);
    }

    /// <summary>y[rows, d] = RmsNorm(x) · w, on the weight's device (the CPU when <paramref name="s"/>'s device lacks the op: the loader put w there).</summary>
    private void RmsNorm(DeviceState s, DeviceTensor x, TensorBinding w, DeviceTensor y, int rows)
    {
        int d = _hp.EmbeddingLength;
        if (w.Device == s.Device)
        {
            s.Queue.RmsNorm(x, Weight(w), y, rows, d, _hp.RmsNormEpsilon);
            return;
        }
        var cpu = OnCpu(s, ComputeOp.RmsNorm);
        CopyActivations(s, x, cpu, cpu.ScratchIn, (long)rows * d);
        cpu.Queue.RmsNorm(cpu.ScratchIn, Weight(w), cpu.ScratchOut, rows, d, _hp.RmsNormEpsilon);
        CopyActivations(cpu, cpu.ScratchOut, s, y, (long)rows * d);
    }

    /// <summary>x[rows, n] += bias, on the bias's device.</summary>
    private void AddBias(DeviceState s, DeviceTensor x, TensorBinding bias, int rows, int n)
    {
        if (bias.Device == s.Device)
        {
            s.Queue.AddBias(x, Weight(bias), rows, n);
            return;
        }
        var cpu = OnCpu(s, ComputeOp.AddBias);
        CopyActivations(s, x, cpu, cpu.ScratchIn, (long)rows * n);
        cpu.Queue.AddBias(cpu.ScratchIn, Weight(bias), rows, n);
        CopyActivations(cpu, cpu.ScratchIn, s, x, (long)rows * n);
    }

    /// <summary>gate = silu(gate) · up over <paramref name="count"/> elements.</summary>
    private void SiluMul(DeviceState s, DeviceTensor gate, DeviceTensor up, long count)
    {
        if (s.Runs(ComputeOp.SiluMul))
        {
            s.Queue.SiluMul(gate, up, gate, count);
            return;
        }
        var cpu = OnCpu(s, ComputeOp.SiluMul);
        CopyActivations(s, gate, cpu, cpu.ScratchIn, count);
        CopyActivations(s, up, cpu, cpu.ScratchOut, count);
        cpu.Queue.SiluMul(cpu.ScratchIn, cpu.ScratchOut, cpu.ScratchIn, count);
        CopyActivations(cpu, cpu.ScratchIn, s, gate, count);
    }

    /// <summary>y += b over <paramref name="count"/> elements.</summary>
    private void Add(DeviceState s, DeviceTensor y, DeviceTensor b, long count)
    {
        if (s.Runs(ComputeOp.Add))
        {
            s.Queue.Add(y, b, y, count);
            return;
        }
        var cpu = OnCpu(s, ComputeOp.Add);
        CopyActivations(s, y, cpu, cpu.ScratchIn, count);
        CopyActivations(s, b, cpu, cpu.ScratchOut, count);
        cpu.Queue.Add(cpu.ScratchIn, cpu.ScratchOut, cpu.ScratchIn, count);
        CopyActivations(cpu, cpu.ScratchIn, s, y, count);
    }

    /// <summary>The CPU's state, to run <paramref name="op"/> that <paramref name="s"/>'s device lacks (counted).</summary>
    private DeviceState OnCpu(DeviceState s, ComputeOp op)
    {
        var cpu = _schedule.Cpu is { } device ? State(device)
            : throw new MissingOpsException($"backend '{s.Device.Description.Backend}' does not support {op} and no cpu backend is loaded to run it");
        if (cpu == s) throw new NotSupportedException($"the cpu backend ({cpu.Device.Description.Name}) does not support {op}");
        cpu.EnsureScratch();
        _opFallbackCounts[op] = _opFallbackCounts.GetValueOrDefault(op) + 1;
        return cpu;
    }

    // Device to device where the plugin can (docs/multi-gpu.md#transfers), else through _staging; counted per device pair.
    private void CopyActivations(DeviceState from, DeviceTensor src, DeviceState to, DeviceTensor dst, long count)
        => ActivationTransfer.Copy(from.Queue, src, to.Queue, dst, count, _staging, Transfers);

    private static DeviceTensor Weight(TensorBinding b) => new(b.Buffer, b.BufferOffset, b.Tensor.Type);

    private DeviceState State(IBackendDevice device)
    {
        if (_states.TryGetValue(device, out var s)) return s;
        // KV layers: its own layers, unless it cannot attend over the context's cache type (then the CPU keeps them).
        var layers = Enumerable.Range(0, _hp.BlockCount).Where(l => _schedule.LayerDevices[l] is var owner && owner == device
            ? !KvOnCpu(owner) : device == _schedule.Cpu && KvOnCpu(owner)).ToArray();
        s = new DeviceState(this, device, _schedule.Queue(device), layers) { KvOnCpu = KvOnCpu(device) };
        _states[device] = s;
        s.Allocate();
        return s;
    }

    /// <summary>True when <paramref name="device"/>'s layers keep their KV cache (and attend) on the CPU.</summary>
    private bool KvOnCpu(IBackendDevice device)
    {
        if (device == _schedule.Cpu || _schedule.Cpu is null) return false;
        var queue = _schedule.Queue(device);
        return !(queue.Supports(ComputeOp.Attention, Options.KvCacheType) && queue.Supports(ComputeOp.Convert, Options.KvCacheType));
    }

    public void Dispose()
    {
        foreach (var s in _states.Values) s.Dispose();
        _states.Clear();
    }

    /// <summary>One device's activations and KV cache (for the layers it runs), each carved from one owned buffer.</summary>
    /// <remarks>Queues belong to whoever built the schedule; a state only uses its queue.</remarks>
    private sealed class DeviceState(LlamaContext owner, IBackendDevice device, IComputeQueue queue, int[] kvLayers) : IDisposable
    {
        private BackendBuffer? _activations, _kv, _scratch, _ropeFactors;
        private readonly Dictionary<int, (DeviceTensor K, DeviceTensor V)> _cache = [];

        public IBackendDevice Device { get; } = device;
        public IComputeQueue Queue { get; } = queue;
        public IReadOnlyList<int> KvLayers { get; } = kvLayers;
        public bool KvOnCpu { get; init; }

        /// <summary>Whether the queue's plugin has <see cref="IComputeQueue.MatMulRopeAndStoreKv"/> (API 1.3; older plugins get the steps).</summary>
        public bool FusesProjectionWithRope { get; } = PluginApiVersions.MinorOf(device) >= PluginApiVersions.MatMulRopeAndStoreKvSince;
        private readonly bool[] _runs = Enum.GetValues<ComputeOp>().Select(op => queue.Supports(op, op is ComputeOp.Attention or ComputeOp.Convert ? owner.Options.KvCacheType : GgmlType.F32)).ToArray();

        /// <summary>Whether this device runs <paramref name="op"/> (F32 activations; the context's cache type for Attention and Convert).</summary>
        public bool Runs(ComputeOp op) => Device == owner._schedule.Cpu || _runs[(int)op];
        public DeviceTensor X, Xb, Q, K, V, Att, Gate, Up, Logits, ScratchIn, ScratchOut;
        public long AllocatedBytes => (_activations?.Size ?? 0) + (_kv?.Size ?? 0) + (_scratch?.Size ?? 0) + (_ropeFactors?.Size ?? 0);

        /// <summary>The model's RoPE frequency factors on this device; null when the model has none or this device cannot rotate with them.</summary>
        public DeviceTensor? RopeFactors { get; private set; }

        public (DeviceTensor K, DeviceTensor V) Cache(int layer) => _cache[layer];

        public void Allocate()
        {
            if (_activations is not null) return;
            var hp = owner._hp;
            long b = owner.BatchSize, align = Math.Max(256, Device.Buffers.Alignment);
            long cursor = 0;
            long Take(long floats) { long at = cursor; cursor = TensorPadding.AlignUp(cursor + floats * sizeof(float), align); return at; }
            long x = Take(b * hp.EmbeddingLength), xb = Take(b * hp.EmbeddingLength), q = Take(b * hp.QDim), k = Take(b * hp.KvDim),
                 v = Take(b * hp.KvDim), att = Take(b * hp.QDim), gate = Take(b * hp.FeedForwardLength), up = Take(b * hp.FeedForwardLength),
                 logits = Take(Device == owner._schedule.OutputDevice ? b * hp.VocabularySize : 0); // only the output device makes logits
            _activations = Device.Buffers.AllocateOwned($"{Device.Description.Backend} activations", cursor);
            DeviceTensor At(long offset) => new(_activations, offset, GgmlType.F32);
            (X, Xb, Q, K, V, Att, Gate, Up, Logits) = (At(x), At(xb), At(q), At(k), At(v), At(att), At(gate), At(up), At(logits));
            PlaceRopeFactors();

            if (KvLayers.Count == 0) return;
            var kvType = owner.Options.KvCacheType;
            long perTensor = TensorPadding.AlignUp(GgmlTypes.RowSize(kvType, (long)owner.Sequences * owner.ContextSize * hp.KvDim), align); // [S × ctx, kvd]
            _kv = Device.Buffers.AllocateOwned($"{Device.Description.Backend} KV cache", perTensor * 2 * KvLayers.Count);
            for (int i = 0; i < KvLayers.Count; i++)
                _cache[KvLayers[i]] = (new DeviceTensor(_kv, perTensor * 2 * i, kvType), new DeviceTensor(_kv, perTensor * (2 * i + 1), kvType));
        }

        /// <summary>
        /// Uses the loaded rope_freqs tensor when it lives on this device; otherwise (split layers, or the tensor fell back to
        /// the CPU) a device that rotates with factors gets its own small copy, so no layer copies activations for RoPE.
        /// </summary>
        private void PlaceRopeFactors()
        {
            var w = owner._w;
            if (w.RopeFrequencyFactors is not { } binding || !owner._schedule.RunsRopeFrequencyFactors(Device)) return;
            if (binding.Device == Device)
            {
                RopeFactors = Weight(binding);
                return;
            }
            var values = w.RopeFrequencyFactorValues.Span;
            if (values.Length != binding.Tensor.ElementCount)
                throw new InvalidOperationException($"{LlamaTensorNames.RopeFrequencies}: the weights carry {values.Length} host values for {binding.Tensor.ElementCount} factors (load models through LoadedModel.Load)");
            _ropeFactors = Device.Buffers.AllocateOwned($"{Device.Description.Backend} RoPE frequency factors", (long)values.Length * sizeof(float));
            var copy = new DeviceTensor(_ropeFactors, 0, GgmlType.F32);
            Queue.Upload(values, copy);
            RopeFactors = copy;
        }

        public void EnsureScratch()
        {
            if (_scratch is not null) return;
            long floats = (long)owner.BatchSize * owner.MaxRowWidth;
            long half = TensorPadding.AlignUp(floats * sizeof(float), 256);
            _scratch = Device.Buffers.AllocateOwned($"{Device.Description.Backend} fallback scratch", 2 * half);
            ScratchIn = new DeviceTensor(_scratch, 0, GgmlType.F32);
            ScratchOut = new DeviceTensor(_scratch, half, GgmlType.F32);
        }

        public void Dispose()
        {
            Queue.Synchronize(); // queued work may still read these buffers
            _scratch?.Dispose();
            _ropeFactors?.Dispose();
            _kv?.Dispose();
            _activations?.Dispose();
        }
    }
}

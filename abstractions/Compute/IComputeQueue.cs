namespace PluginEngine.Abstractions;

/// <summary>The ops the core's model graphs are written in (docs/architecture.md#compute-queue-and-fused-ops).</summary>
public enum ComputeOp
{
    /// <summary>Embedding rows of a (possibly quantized) table, dequantized to F32.</summary>
    GetRows,
    /// <summary>Root-mean-square normalisation times a weight vector.</summary>
    RmsNorm,
    /// <summary>F32 activations times a (possibly quantized) weight matrix, transposed.</summary>
    MatMul,
    /// <summary>Rotary position embedding.</summary>
    Rope,
    /// <summary>Causal grouped-query attention over a KV cache.</summary>
    Attention,
    /// <summary>silu(gate) · up.</summary>
    SiluMul,
    /// <summary>Element-wise sum.</summary>
    Add,
    /// <summary>Adds a bias vector to every row (qwen2's q/k/v biases).</summary>
    AddBias,
    /// <summary>Copy with type conversion (F32 → F32/F16, or to a quantized KV cache's Q8_0/Q4_0 blocks), e.g. storing K/V into the cache.</summary>
    Convert,
    /// <summary>
    /// Rotary position embedding with per-pair frequency factors (<see cref="IComputeQueue.RopeWithFactors"/>; Llama 3.1
    /// <c>rope_freqs.weight</c>). Added after API v1 shipped: a backend must both say so in <see cref="IComputeQueue.Supports"/>
    /// (type F32) and override <see cref="IComputeQueue.RopeWithFactors"/>; the core runs it on the CPU otherwise.
    /// </summary>
    RopeFrequencyFactors,
}

/// <summary>Rotary-embedding flavour.</summary>
public enum RopeMode
{
    /// <summary>Rotate adjacent pairs (2i, 2i+1): llama, mistral.</summary>
    Normal,
    /// <summary>Rotate pairs (i, i + d/2): NeoX, qwen2.</summary>
    NeoX,
}

/// <summary>A span of a device buffer viewed as elements of <paramref name="Type"/>.</summary>
/// <param name="Buffer">The buffer (of the queue's device).</param>
/// <param name="Offset">Byte offset of element 0.</param>
/// <param name="Type">Element type.</param>
public readonly record struct DeviceTensor(BackendBuffer Buffer, long Offset, GgmlType Type)
{
    /// <summary>The same buffer at <paramref name="bytes"/> further on.</summary>
    public DeviceTensor At(long bytes) => this with { Offset = Offset + bytes };

    /// <summary>The same buffer <paramref name="elements"/> elements further on (plain types only).</summary>
    public DeviceTensor Skip(long elements) => this with { Offset = Offset + GgmlTypes.RowSize(Type, elements) };
}

/// <summary>Parameters of <see cref="IComputeQueue.Rope"/>.</summary>
/// <param name="Mode">Pairing of rotated elements.</param>
/// <param name="Dims">Rotated dimensions per head (≤ head size; the rest pass through).</param>
/// <param name="FrequencyBase">θ base (10000 for Llama 2, 500000 for Llama 3).</param>
/// <param name="FrequencyScale">Linear position scale (1 = none).</param>
public readonly record struct RopeParams(RopeMode Mode, int Dims, float FrequencyBase, float FrequencyScale);

/// <summary>Shape of <see cref="IComputeQueue.Attention"/>.</summary>
/// <param name="Tokens">New tokens in the batch (query rows).</param>
/// <param name="FirstPosition">Position of the first new token; the cache already holds positions 0 .. FirstPosition+Tokens-1.</param>
/// <param name="Heads">Query heads.</param>
/// <param name="KvHeads">Key/value heads (Heads is a multiple of it: grouped-query attention).</param>
/// <param name="HeadSize">Elements per head.</param>
/// <param name="Scale">Score scale, usually 1/sqrt(HeadSize).</param>
public readonly record struct AttentionParams(int Tokens, int FirstPosition, int Heads, int KvHeads, int HeadSize, float Scale);

/// <summary>
/// One sequence's rows in a multi-sequence batch (<see cref="IComputeQueue.RopeAndStoreKvSegments"/>,
/// <see cref="IComputeQueue.AttentionSegments"/>; docs/batching.md#the-forward-pass).
/// </summary>
/// <param name="FirstRow">The segment's first token row in the batch's q/k/v/output tensors.</param>
/// <param name="Tokens">Its token rows (≥ 1): rows FirstRow .. FirstRow + Tokens − 1.</param>
/// <param name="FirstPosition">Position of its first token in its own sequence (the sequence's cache holds 0 .. FirstPosition − 1 before this batch).</param>
/// <param name="CacheRow">Row of the cache tensors where the sequence's position 0 lives (its KV slot): position p is cache row CacheRow + p.</param>
public readonly record struct SequenceSegment(int FirstRow, int Tokens, int FirstPosition, int CacheRow);

/// <summary>One weight of <see cref="IComputeQueue.MatMulShared"/>: Output[t, :] = x[t, :]·Weightᵀ.</summary>
/// <param name="Weight">[Rows × cols] in its type, on the queue's device.</param>
/// <param name="Rows">Rows of the weight (elements of each output row).</param>
/// <param name="Output">F32 [tokens, Rows].</param>
public readonly record struct MatMulTarget(DeviceTensor Weight, long Rows, DeviceTensor Output);

/// <summary>
/// An in-order queue of ops on one device (a CUDA stream, an OpenCL command queue, the CPU's worker pool).
/// Ops may run asynchronously: the host synchronizes only through <see cref="Download"/> and <see cref="Synchronize"/>.
/// Every tensor argument lives in a buffer of this queue's device. Activations are F32 unless stated.
/// A backend may support a subset: <see cref="Supports"/> says which, and the core runs the rest on the CPU,
/// copying (and counting) the data it needs.
/// </summary>
public interface IComputeQueue : IDisposable
{
    /// <summary>The device this queue runs on.</summary>
    IBackendDevice Device { get; }

    /// <summary>Whether <paramref name="op"/> is implemented for <paramref name="type"/> (the weight type for GetRows/MatMul,
    /// the cache type for Attention and Convert's destination, F32 for the rest).</summary>
    bool Supports(ComputeOp op, GgmlType type);

    /// <summary>dst[i, :] = dequantize(table[rows[i], :]), rows of <paramref name="rowLength"/> elements; dst is F32 [rows.Length, rowLength].</summary>
    void GetRows(DeviceTensor table, long rowLength, ReadOnlySpan<int> rows, DeviceTensor dst);

    /// <summary>y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) · weight for <paramref name="rows"/> rows of <paramref name="n"/> elements.</summary>
    void RmsNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor y, int rows, int n, float eps);

    /// <summary>y[t, r] = Σ_c x[t, c] · w[r, c]: weight w is [wRows rows × wCols] in its type, x is F32 [tokens, wCols], y is F32 [tokens, wRows].</summary>
    void MatMul(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens);

    /// <summary>Rotates x in place: x is F32 [tokens, heads, headSize]; token t is at position firstPosition + t.</summary>
    void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope);

    /// <summary>
    /// As <see cref="Rope"/>, but rotated pair i turns by θ_i = pos · FrequencyScale · FrequencyBase^(−2i/Dims) / factors[i]:
    /// <paramref name="factors"/> is F32 [rope.Dims / 2] on this queue's device (the model's <c>rope_freqs.weight</c>, written
    /// for Llama 3.1-style "llama3" RoPE scaling). Pair i is (2i, 2i+1) in <see cref="RopeMode.Normal"/> and (i, i + Dims/2) in
    /// <see cref="RopeMode.NeoX"/>, as in ggml's <c>rope_ext</c> with <c>freq_factors</c>.
    /// The core calls it instead of <see cref="Rope"/> when a model carries frequency factors and
    /// <see cref="Supports"/>(<see cref="ComputeOp.RopeFrequencyFactors"/>, F32) is true; otherwise it runs this op on the CPU.
    /// Default: throws <see cref="NotSupportedException"/> (plugins built before this member existed keep working unchanged).
    /// </summary>
    void RopeWithFactors(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope, DeviceTensor factors)
        => throw new NotSupportedException($"{Device.Description.Backend} does not implement RoPE with frequency factors");

    /// <summary>
    /// out[t, h, :] = softmax(scale · q[t, h, :] · K[0..p_t, h / (Heads/KvHeads), :]) · V[…]: q and out are F32 [tokens, heads, headSize],
    /// the caches are [capacity, kvHeads, headSize] in their type (F32 or F16; Q8_0 or Q4_0 for a quantized cache: each position's
    /// row of kvHeads × headSize elements is whole 32-element GGUF blocks, position p at byte p × RowSize(type, kvHeads × headSize),
    /// headSize a multiple of 32), p_t = FirstPosition + t (causal).
    /// </summary>
    void Attention(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output, AttentionParams p);

    /// <summary>y = silu(gate) · up over <paramref name="n"/> elements.</summary>
    void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n);

    /// <summary>y = a + b over <paramref name="n"/> elements (y may alias a).</summary>
    void Add(DeviceTensor a, DeviceTensor b, DeviceTensor y, long n);

    /// <summary>x[r, :] += bias[:] for <paramref name="rows"/> rows of <paramref name="n"/> elements; bias is F32 [n].</summary>
    void AddBias(DeviceTensor x, DeviceTensor bias, int rows, int n);

    /// <summary>Copies <paramref name="n"/> F32 elements into dst converting to dst's type (F32 or F16; Q8_0 or Q4_0 blocks, quantized as
    /// the GGUF quantizers do, when <paramref name="n"/> is whole 32-element blocks: a quantized KV cache's rows).</summary>
    void Convert(DeviceTensor src, DeviceTensor dst, long n);

    // ---- Fused ops. Each is defined by the primitive ops its default runs, so every backend has it; a backend overrides
    // ---- one to do the same work in fewer passes (a decode step on a GPU is mostly launch latency otherwise). Results
    // ---- may differ from the default only by rounding; the conformance kit compares the two on every backend.

    /// <summary>
    /// Several weights applied to the same activations (q, k and v; gate and up): for each target,
    /// Output[t, :] = x[t, :]·Weightᵀ with x F32 [tokens, cols]. Outputs must not overlap x or each other.
    /// Default: one <see cref="MatMul"/> per target, in order.
    /// </summary>
    void MatMulShared(DeviceTensor x, long cols, int tokens, ReadOnlySpan<MatMulTarget> targets)
    {
        foreach (var t in targets) MatMul(t.Weight, t.Rows, cols, x, t.Output, tokens);
    }

    /// <summary>
    /// y[t, :] += x[t, :]·wᵀ (a projection added into the residual stream); y is F32 [tokens, wRows] and must not overlap x.
    /// <paramref name="scratch"/> is F32 [tokens, wRows] that the op may overwrite; it must not overlap x or y.
    /// Default: <see cref="MatMul"/> into scratch, then <see cref="Add"/>(y, scratch, y).
    /// </summary>
    void MatMulAdd(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens, DeviceTensor scratch)
    {
        MatMul(w, wRows, wCols, x, scratch, tokens);
        Add(y, scratch, y, (long)tokens * wRows);
    }

    /// <summary>
    /// The SwiGLU feed-forward input: gate[t, :] = silu(x[t, :]·wGateᵀ) · (x[t, :]·wUpᵀ), both weights [rows × cols];
    /// <paramref name="up"/> is F32 [tokens, rows] that the op may overwrite; gate and up must not overlap x or each other.
    /// Default: <see cref="MatMulShared"/> into gate and up, then <see cref="SiluMul"/>(gate, up, gate).
    /// </summary>
    void MatMulSwiGlu(DeviceTensor wGate, DeviceTensor wUp, long rows, long cols, DeviceTensor x, DeviceTensor gate, DeviceTensor up, int tokens)
    {
        MatMulShared(x, cols, tokens, [new MatMulTarget(wGate, rows, gate), new MatMulTarget(wUp, rows, up)]);
        SiluMul(gate, up, gate, (long)tokens * rows);
    }

    /// <summary>
    /// Rotates q [Tokens, Heads, HeadSize] and k [Tokens, KvHeads, HeadSize] in place, then stores k and v (F32
    /// [Tokens, KvHeads, HeadSize]) into the caches at rows FirstPosition .. FirstPosition + Tokens − 1, converted to the
    /// cache type. Both caches have one type (F32, F16, or Q8_0/Q4_0 rows of whole blocks) and at least FirstPosition + Tokens rows of KvHeads × HeadSize;
    /// rows outside the batch's are not touched. <paramref name="factors"/> is null for plain RoPE, else the frequency
    /// factors of <see cref="RopeWithFactors"/>.
    /// Default: <see cref="Rope"/> (or <see cref="RopeWithFactors"/>) on q and on k, then <see cref="Convert"/> of k and of v.
    /// </summary>
    void RopeAndStoreKv(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor kCache, DeviceTensor vCache, AttentionParams p,
                        RopeParams rope, DeviceTensor? factors)
    {
        if (factors is { } f)
        {
            RopeWithFactors(q, p.Tokens, p.Heads, p.HeadSize, p.FirstPosition, rope, f);
            RopeWithFactors(k, p.Tokens, p.KvHeads, p.HeadSize, p.FirstPosition, rope, f);
        }
        else
        {
            Rope(q, p.Tokens, p.Heads, p.HeadSize, p.FirstPosition, rope);
            Rope(k, p.Tokens, p.KvHeads, p.HeadSize, p.FirstPosition, rope);
        }
        long kvd = (long)p.KvHeads * p.HeadSize, count = p.Tokens * kvd;
        Convert(k, kCache.Skip(p.FirstPosition * kvd), count);
        Convert(v, vCache.Skip(p.FirstPosition * kvd), count);
    }

    /// <summary>
    /// The attention block's input side for one sequence (since API 1.3): q, k and v projected from x F32 [Tokens, cols] as
    /// <see cref="MatMulShared"/> does (targets q, k, v in that order, <paramref name="p"/>.Tokens tokens), then rotated and
    /// stored as <see cref="RopeAndStoreKv"/> does (q.Output and k.Output rotated in place, k and v written to the caches at rows
    /// FirstPosition .. FirstPosition + Tokens − 1). q/k/v rows are Heads/KvHeads/KvHeads × HeadSize; the same requirements as those
    /// two ops. A GPU can rotate and store in the mat-vec's epilogue and save a launch per layer (docs/gpu-kernels.md#decode-launches).
    /// Default: <see cref="MatMulShared"/>, then <see cref="RopeAndStoreKv"/> (what the core called before 1.3).
    /// </summary>
    void MatMulRopeAndStoreKv(DeviceTensor x, long cols, MatMulTarget q, MatMulTarget k, MatMulTarget v, DeviceTensor kCache, DeviceTensor vCache,
                              AttentionParams p, RopeParams rope, DeviceTensor? factors)
    {
        MatMulShared(x, cols, p.Tokens, [q, k, v]);
        RopeAndStoreKv(q.Output, k.Output, v.Output, kCache, vCache, p, rope, factors);
    }

    // ---- Multi-sequence batches (API 1.2; docs/batching.md). A batch holds tokens of several sequences, each a contiguous
    // ---- run of rows (a segment) with its own positions and its own KV slot in one pair of cache tensors; attention only
    // ---- sees the segment's own sequence. The defaults run the per-sequence ops once per segment on offset tensors, so
    // ---- every backend has them; a backend overrides them to cover all segments in one pass. Results may differ from the
    // ---- default only by rounding; the conformance kit compares the two.

    /// <summary>
    /// <see cref="RopeAndStoreKv"/> for every segment of a multi-sequence batch: q is F32 [rows, Heads, HeadSize], k and v F32
    /// [rows, KvHeads, HeadSize] (rows = Σ segment tokens); segment s's rows are rotated at positions FirstPosition + t and its k/v
    /// stored at cache rows CacheRow + FirstPosition + t. <paramref name="p"/> gives Heads, KvHeads, HeadSize and Scale; its
    /// Tokens and FirstPosition are not read. Segments must not overlap in rows or in written cache rows.
    /// Default: <see cref="RopeAndStoreKv"/> per segment on tensors offset to its rows and its slot (since API 1.2).
    /// </summary>
    void RopeAndStoreKvSegments(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor kCache, DeviceTensor vCache,
                                ReadOnlySpan<SequenceSegment> segments, AttentionParams p, RopeParams rope, DeviceTensor? factors)
    {
        long qd = (long)p.Heads * p.HeadSize, kvd = (long)p.KvHeads * p.HeadSize;
        foreach (var s in segments)
        {
            var one = p with { Tokens = s.Tokens, FirstPosition = s.FirstPosition };
            RopeAndStoreKv(q.Skip(s.FirstRow * qd), k.Skip(s.FirstRow * kvd), v.Skip(s.FirstRow * kvd),
                           kCache.Skip(s.CacheRow * kvd), vCache.Skip(s.CacheRow * kvd), one, rope, factors);
        }
    }

    /// <summary>
    /// <see cref="Attention"/> for every segment of a multi-sequence batch: output rows of segment s attend (causally) over
    /// cache rows CacheRow .. CacheRow + FirstPosition + t of their own sequence only. q and output are F32 [rows, Heads,
    /// HeadSize]; the caches [slots × capacity, KvHeads, HeadSize] in their type. <paramref name="p"/> gives Heads, KvHeads,
    /// HeadSize and Scale; its Tokens and FirstPosition are not read.
    /// Default: <see cref="Attention"/> per segment on tensors offset to its rows and its slot (since API 1.2).
    /// </summary>
    void AttentionSegments(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output,
                           ReadOnlySpan<SequenceSegment> segments, AttentionParams p)
    {
        long qd = (long)p.Heads * p.HeadSize, kvd = (long)p.KvHeads * p.HeadSize;
        foreach (var s in segments)
            Attention(q.Skip(s.FirstRow * qd), kCache.Skip(s.CacheRow * kvd), vCache.Skip(s.CacheRow * kvd), output.Skip(s.FirstRow * qd),
                      p with { Tokens = s.Tokens, FirstPosition = s.FirstPosition });
    }

    /// <summary>Enqueues a host → device copy of F32 values (the span may be reused as soon as this returns).</summary>
    void Upload(ReadOnlySpan<float> source, DeviceTensor dst);

    /// <summary>Waits for queued work, then copies F32 values device → host.</summary>
    void Download(DeviceTensor src, Span<float> destination);

    /// <summary>Waits until every queued op has finished.</summary>
    void Synchronize();

    /// <summary>
    /// Copies <paramref name="bytes"/> bytes of <paramref name="src"/> (on this queue's device) into <paramref name="dst"/> on
    /// <paramref name="destination"/>'s device without passing through the core's host staging (a peer copy between two GPUs
    /// of one plugin, or a copy through the plugin's own pinned memory). When it returns true the copy is ordered after this
    /// queue's earlier work and before <paramref name="destination"/>'s later work, exactly as a <see cref="Download"/>
    /// followed by an <see cref="Upload"/> would be. Returns false, having done nothing, when this plugin cannot copy into
    /// that queue (another backend, another plugin instance): the core then copies through host memory.
    /// Since API 1.2. Default: false (the core's staging copy, which is what a 1.0 or 1.1 plugin gets); the core calls it only
    /// on plugins compiled against 1.2 or later. See docs/multi-gpu.md#transfers.
    /// </summary>
    bool CopyTo(DeviceTensor src, IComputeQueue destination, DeviceTensor dst, long bytes) => false;
}

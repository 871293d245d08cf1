using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Gpu.Kernels;

/// <summary>
/// Which kernels and paths the GPU queue uses; alternatives exist so that each can be measured against the other.
/// plugins.json options (<c>matvec</c>, <c>gemm</c>, ...); an environment variable PLUGINENGINE_CUDA_&lt;OPTION&gt; (CUDA) or
/// PLUGINENGINE_HIP_&lt;OPTION&gt; (HIP) overrides each (handy for A/B runs of <c>bench</c>). Read by <see cref="FromCuda"/> and
/// <see cref="FromHip"/>: HIP has no <c>gemm</c> (no vendor BLAS bound yet), <c>graphs</c> or <c>pdl</c> option, and adds
/// <c>readonly_register</c>.
/// </summary>
/// <param name="Int8MatVec">
/// <c>matvec: int8</c> (default): single-token matmuls on Q8_0/Q4_0/Q4_K/Q6_K weights quantize the activation row to
/// 8 bits once and use integer dot products (dp4a). <c>f32</c>: the F32 mat-vec kernel (activations stay in F32).
/// </param>
/// <param name="CublasPrompt">
/// <c>gemm: cublas</c> (default, when cuBLAS loads): matmuls of at least <see cref="LaunchGeometry.BlasMinTokens"/>
/// tokens dequantize the weights to F16 into a scratch buffer and run cublasGemmEx on the tensor cores (F32 weights:
/// an F32 GEMM). <c>kernels</c>: the plugin's own batched kernel.
/// </param>
/// <param name="Graphs">
/// <c>graphs: off</c> (default): every kernel is launched directly, and the GPU starts on a step's first kernel while
/// the host still issues the rest. <c>on</c> (CUDA, where the driver has the graph API): kernels are recorded and run as
/// graphs built once per step segment and replayed, only the nodes whose arguments changed updated (CUDA's
/// CudaStepGraph; docs/gpu-kernels.md#step-graphs). That takes the host's launches away (0.6-0.9 us a kernel against 2.4),
/// but the GPU then runs the graph's kernels more slowly than directly launched ones with programmatic launch: TinyLlama
/// Q4_0 decode 1,204 against 1,322 t/s, 7B Q4_0 471 against 471, 16 sequences of 7B 3,895 against 3,854 (one H100,
/// 2026-12-07). So off stays the default.
/// </param>
/// <param name="FusedOps">
/// <c>fusion: on</c> (default): the queue's fused ops (MatMulShared, MatMulAdd, MatMulSwiGlu, RopeAndStoreKv) run as
/// single kernels where a kernel exists (a decode step: 9 launches per layer instead of 18); <c>off</c>: they run as
/// the primitive ops of their defaults. Environment: PLUGINENGINE_CUDA_FUSION.
/// </param>
/// <param name="ProgrammaticLaunch">
/// <c>pdl: on</c> (default; used on sm_90 and later where the driver has cuLaunchKernelEx): kernels are launched with
/// programmatic stream serialization, so each is scheduled while its predecessor still runs and waits for it on the
/// device (kernels.cu's PDL_ENTRY); <c>off</c>: plain launches. Environment: PLUGINENGINE_CUDA_PDL.
/// </param>
/// <param name="KernelDefines">
/// <c>defines</c> (default empty): kernel tuning macros for experiments, "NAME=INT;NAME=INT" (kernels.cu's MATVEC_UNROLL,
/// SWIGLU_UNROLL, MATVEC_MIN_BLOCKS), defined before the source is compiled (and cached under their own key). Environment:
/// PLUGINENGINE_CUDA_DEFINES. Normalized to "NAME=INT;…" in the order given.
/// </param>
/// <param name="AttentionChunk">
/// <c>attention_chunk</c> (default <see cref="DefaultAttentionChunk"/>): a decode step whose history is longer than this many
/// positions splits attention over blocks of at least that many positions per head (kernels.cu attention_split_*, combined by
/// the last block), longer ones where the heads' blocks would outnumber the SMs (<see cref="LaunchGeometry.AttentionChunk"/>);
/// 0 never splits (one block per head walks the whole history). Environment: PLUGINENGINE_CUDA_ATTENTION_CHUNK.
/// </param>
/// <param name="Int8SmallBatch">
/// <c>batch_matvec: int8</c> (default): matmuls of 2 to <see cref="LaunchGeometry.BlasMinTokens"/> − 1 tokens on the int8 mat-vec's
/// weight types (several sequences decoding in one step, short prompt chunks; docs/batching.md) quantize every token's
/// activation row once and use the integer dot products, <see cref="LaunchGeometry.MatMulQ8Tokens"/> tokens per pass over
/// the weights (kernels.cu matmul_q8_*). <c>f32</c>: the F32 batched kernel (matmul_*_tn). Needs <c>matvec: int8</c>.
/// Environment: PLUGINENGINE_CUDA_BATCH_MATVEC / PLUGINENGINE_HIP_BATCH_MATVEC.
/// </param>
/// <param name="IntegerMma">
/// CUDA only, <c>mma: on</c> (default; used on sm_80 and later): matmuls of <see cref="MmaMinTokensFor"/> to <see cref="MmaMaxTokens"/>
/// tokens on Q8_0, Q4_0 and Q4_K weights multiply the stored quantized blocks with the 8-bit activations on the tensor cores
/// (int8 mma, kernels.cu mmq_*; docs/gpu-kernels.md#int8-tensor-core-matmuls-mmq) instead of the dp4a kernel. <c>off</c>: the dp4a kernel
/// (matmul_q8_*) up to 31 tokens. Environment: PLUGINENGINE_CUDA_MMA.
/// </param>
/// <param name="MmaMaxTokens">
/// CUDA only, <c>mma_max_tokens</c> (default <see cref="DefaultMmaMaxTokens"/>): the largest matmul (in tokens) that takes the int8
/// mma path; larger ones go to cuBLAS. Environment: PLUGINENGINE_CUDA_MMA_MAX_TOKENS.
/// </param>
/// <param name="MmaMinTokens">
/// CUDA only, <c>mma_min_tokens</c> (default 0: per weight type, <see cref="MmaMinTokensFor"/>): the smallest matmul (in tokens) that
/// takes the int8 mma path; smaller batches keep the dp4a kernel (matmul_q8_*), which measured faster for a few tokens
/// (docs/gpu-kernels.md#int8-tensor-core-matmuls-mmq). Environment: PLUGINENGINE_CUDA_MMA_MIN_TOKENS.
/// </param>
/// <param name="MmaSplit">
/// CUDA only, <c>mma_split</c> (default 0: as many K slices as fill the GPU, <see cref="LaunchGeometry.MmqSplits"/>): how many
/// blocks share each tile of an mmq matmul, each over a slice of the row, added in slice order by the last one
/// (docs/gpu-kernels.md#int8-tensor-core-matmuls-mmq); 1 never splits. Environment: PLUGINENGINE_CUDA_MMA_SPLIT.
/// </param>
/// <param name="FlashAttention">
/// CUDA only, <c>flash_attn: on</c> (default; used on sm_80 and later): a prompt of at least <see cref="LaunchGeometry.AttentionMmaMinTokens"/>
/// tokens over an F16 cache with head size 64 or 128 attends on the tensor cores, 64 tokens of a head per block
/// (kernels.cu attention_mma_f16_d*, docs/gpu-kernels.md#prompt-attention); <c>off</c>: one block per (head, token) in F32.
/// F32 and Q8_0 caches always take the per-token kernels (docs/gpu-kernels.md#q8_0-kv-cache). Environment: PLUGINENGINE_CUDA_FLASH_ATTN.
/// </param>
/// <param name="BatchInvariant">
/// CUDA only, <c>batch_invariant: off</c> (default). <c>on</c>: every token's logits are the same bits whatever else is in its batch
/// (docs/gpu-kernels.md#batch-invariance), so a served request's greedy output does not depend on the other requests:
/// a matmul on Q8_0/Q4_0/Q4_K/Q6_K weights takes the int8 batch kernel (mmq_* on sm_80+, else matmul_q8_*) at every token
/// count, one token and prompts included (no mat-vec, no cuBLAS), other weight types the plugin's batched kernel
/// (matmul_*_tn); a decode row is normalized and quantized by rms_norm like any other row. Costs decode and prompt
/// speed (measured in docs/benchmarks.md). Environment: PLUGINENGINE_CUDA_BATCH_INVARIANT.
/// </param>
/// <param name="ReadOnlyHostRegister">
/// HIP only, <c>readonly_register: off</c> (default): imported host pages are registered mapped, read-write;
/// <c>on</c> adds hipHostRegisterReadOnly (measured 14 % slower on gfx1151 in the system this project comes from). CUDA
/// always asks for READ_ONLY where the device supports it (needed to register a read-only file mapping). Environment:
/// PLUGINENGINE_HIP_READONLY_REGISTER.
/// </param>
/// <param name="SegmentKernels">
/// <c>segment_kernels: on</c> (default): a multi-sequence batch's RopeAndStoreKvSegments and AttentionSegments run as one
/// launch each over every segment (kernels.cu rope_store_kv_rows, attention_rows_*; docs/batching.md#backends); <c>off</c>:
/// the interface's default loop, one RopeAndStoreKv and one Attention launch per segment. Environment:
/// PLUGINENGINE_CUDA_SEGMENT_KERNELS / PLUGINENGINE_HIP_SEGMENT_KERNELS.
/// </param>
/// <param name="TiledWeights">
/// CUDA only, <c>weight_layout: tiled</c> (default): the first time a Q4_0 matrix whose rows are a multiple of 8 and whose row
/// length is a multiple of 128 reaches the int8 tensor-core matmul (mmq: batches of several sequences' tokens, short prompts),
/// the queue makes a copy of it in the tiled layout (kernels.cu tile_q4_0; docs/gpu-kernels.md#tiled-q4_0-weights) in the
/// buffer's device memory and mmq reads the copy from then on; the GGUF bytes stay for every other reader (the one-token
/// mat-vecs among them: they are faster on those). Costs the matrix's size again in device memory, so a
/// copy is made only where the device keeps <see cref="LaunchGeometry.TiledCopyReserveBytes"/> free after it. Only owned
/// (uploaded) weights are copied, and none while step graphs capture. <c>gguf</c>: every kernel reads the GGUF layout.
/// Environment: PLUGINENGINE_CUDA_WEIGHT_LAYOUT.
/// </param>
/// <param name="SwiGluQuantize">
/// <c>swiglu_quantize: off</c> (default): a decode step's fused SwiGLU mat-vec (kernels.cu swiglu_q8_*) writes F32 and a
/// quantize_x_q8 launch makes the down projection's 8-bit row. <c>on</c>: the mat-vec quantizes its own output (the last block of
/// each 32-row group does it, after a fence and a ticket), one launch less per layer. Measured on an H100
/// (docs/gpu-kernels.md#decode-launches): 7B Q4_0 tg128 460.8 t/s on against 475.5 off, so off is the default. Environment:
/// PLUGINENGINE_CUDA_SWIGLU_QUANTIZE / PLUGINENGINE_HIP_SWIGLU_QUANTIZE.
/// </param>
/// <param name="QkvRope">
/// <c>qkv_rope: on</c>: a decode step's q/k/v mat-vec (<see cref="PluginEngine.Abstractions.IComputeQueue.MatMulRopeAndStoreKv"/>,
/// kernels.cu matvec_rope_*) rotates q and k and stores k and v into the caches in its epilogue, one launch less per layer
/// (adjacent-pair RoPE on int8 mat-vec weights; docs/gpu-kernels.md#decode-launches). <c>off</c> (default): the mat-vec, then
/// rope_store_kv. Correct on an H100 (the kit, 2026-12-07) but no faster: 7B Q4_0 tg128 the same, Q4_K_M 1 % slower, TinyLlama
/// Q4_0 within its spread. Environment: PLUGINENGINE_CUDA_QKV_ROPE / PLUGINENGINE_HIP_QKV_ROPE.
/// </param>
/// <param name="PlainFusion">
/// <c>plain_fusion: on</c>: a decode step on F32, F16 or BF16 weights takes the fused mat-vecs as the quantized types do
/// (kernels.cu matvec_f16 and the like: q/k/v in one launch, the residual added in the same pass, gate and up with SwiGLU, RoPE
/// in the epilogue), with x in F32 and each row summed as matmul_*_t1 sums it (docs/gpu-kernels.md#f16-decode). The CUDA default:
/// TinyLlama F16 tg128 597.7 / 606.1 t/s against 540.7 / 541.6 off on an H100 (2026-12-07). <c>off</c> (HIP's default until it
/// has run on an AMD GPU): one matmul_*_t1 launch per weight, then add and silu_mul launches. Environment:
/// PLUGINENGINE_CUDA_PLAIN_FUSION / PLUGINENGINE_HIP_PLAIN_FUSION.
/// </param>
/// <param name="GemmInputFused">
/// CUDA only, <c>gemm_input: fused</c>: a prompt's rms_norm, silu_mul and tensor-core attention also write their output as F16, the input of the cuBLAS
/// GEMM that reads it next, and one F16 copy of a GEMM input serves every GEMM on the same rows (q, k and v; gate and up), so
/// the other conversions (convert_f32_f16) go (docs/gpu-kernels.md#prompt-gemm-inputs). The same f16 values either way. The
/// default: 7B Q4_0 pp512 23,290 t/s against 21,431 with <c>convert</c> on an H100 (2026-12-07). <c>convert</c>: each GEMM
/// converts its input. Environment: PLUGINENGINE_CUDA_GEMM_INPUT.
/// </param>
/// <param name="GemmBatch">
/// CUDA only, <c>gemm_batch: on</c>: a prompt's matmuls on the same input whose quantized weights have the same shape and whose
/// outputs lie equally spaced (q, k and v of a model without grouped-query attention; gate and up) are dequantized side by
/// side and multiplied in one strided batched cuBLAS GEMM, one launch with the tiles of all of them, instead of one GEMM each
/// (docs/gpu-kernels.md#prompt-gemm-inputs). The default: 7B Q4_0 pp512 23,639 / 23,597 t/s against 23,290 off on an H100
/// (2026-12-07). <c>off</c>: one GEMM per matrix. Environment: PLUGINENGINE_CUDA_GEMM_BATCH.
/// </param>
/// <param name="DeviceQ8_0Cache">
/// <c>q8_0_cache: on</c>: a Q8_0 KV cache (<c>--kv-type q8_0</c>) stays on the device: the queue stores into it (store_kv_q8_0,
/// convert_f32_q8_0) and attends over it (attention_*_q8_0, attention_mma_q8_0_d*; docs/gpu-kernels.md#q8_0-kv-cache). CUDA's
/// default since the kit's Q8_0 cases passed on an H100 (2026-12-07). <c>off</c> (HIP's default until it has run on an AMD
/// GPU): Supports answers no for Q8_0, so the core keeps such a cache, and the attention over it, on the CPU. Environment:
/// PLUGINENGINE_CUDA_Q8_0_CACHE / PLUGINENGINE_HIP_Q8_0_CACHE.
/// </param>
/// <param name="DeviceQ4_0Cache">
/// <c>q4_0_cache: on</c>: a Q4_0 KV cache (<c>--kv-type q4_0</c>) stays on the device, as <paramref name="DeviceQ8_0Cache"/> does
/// for Q8_0 (store_kv_q4_0, convert_f32_q4_0, attention_*_q4_0, attention_mma_q4_0_d*; docs/gpu-kernels.md#q4_0-kv-cache).
/// CUDA's default since the kit's Q4_0 cache cases passed on an H100 (2026-12-08). <c>off</c> (HIP's default until it has run on
/// an AMD GPU): the core keeps such a cache, and the attention over it, on the CPU. Environment: PLUGINENGINE_CUDA_Q4_0_CACHE /
/// PLUGINENGINE_HIP_Q4_0_CACHE.
/// </param>
internal sealed record GpuKernelOptions(bool Int8MatVec, bool BlasPrompt, bool Graphs = false, bool FusedOps = true, bool ProgrammaticLaunch = true,
                                        string KernelDefines = "", int AttentionChunk = GpuKernelOptions.DefaultAttentionChunk,
                                        bool ReadOnlyHostRegister = false, bool Int8SmallBatch = true, bool SegmentKernels = true,
                                        bool IntegerMma = true, int MmaMaxTokens = GpuKernelOptions.DefaultMmaMaxTokens, bool BatchInvariant = false,
                                        int MmaMinTokens = GpuKernelOptions.DefaultMmaMinTokens, int MmaSplit = 0,
                                        bool FlashAttention = true, bool TiledWeights = true, bool SwiGluQuantize = false,
                                        bool QkvRope = false, bool PlainFusion = true, bool GemmInputFused = true,
                                        bool GemmBatch = true, bool DeviceQ8_0Cache = true, bool DeviceQ4_0Cache = true)
{
    /// <summary>Largest matmul on the int8 mma path by default: the smallest batch that cuBLAS takes, less one (measured in
    /// docs/benchmarks.md; <c>mma_max_tokens</c> moves it).</summary>
    public const int DefaultMmaMaxTokens = LaunchGeometry.BlasMinTokens - 1;

    /// <summary><c>mma_min_tokens</c> unset: the smallest batch on the int8 mma path depends on the weight type (<see cref="MmaMinTokensFor"/>).</summary>
    public const int DefaultMmaMinTokens = 0;

    /// <summary>
    /// The smallest matmul (in tokens) on the int8 mma path for <paramref name="type"/> weights: <see cref="MmaMinTokens"/> when set,
    /// else 5 for Q4_K and 9 for Q4_0 and Q8_0. Measured on an H200 (7B, sequences decoding together, 2026-12-06): the dp4a kernel
    /// won up to 8 tokens on Q4_0 (1,212 against 1,029 t/s at 8) and up to 4 on Q4_K (561 against 499), whose dp4a kernel unpacks
    /// 6-bit scales per token group; the mma kernel won above (Q4_0 16 tokens 1,853 against 1,287; Q4_K 8 tokens 853 against 634).
    /// </summary>
    public int MmaMinTokensFor(GgmlType type) => MmaMinTokens > 0 ? MmaMinTokens : type == GgmlType.Q4_K ? 5 : 9;

    /// <summary>
    /// Positions per attention block in a split decode step: 8 steps of the block's 16 warps x 4 positions. Measured on an H100
    /// (7B Q4_0, tg128 after 3,840 positions, vector K/V loads): 1024 289.0 t/s, 512 280.3, 256 262.8, no split 143.8; at depth
    /// 0 all the same. 512 rather than 1024 keeps more blocks per head at middling depths (1,000-2,000 positions).
    /// </summary>
    public const int DefaultAttentionChunk = 512;

    public static GpuKernelOptions Default { get; } = new(true, true, false, true, true, "", DefaultAttentionChunk);

    /// <summary>The CUDA plugin's options (environment prefix PLUGINENGINE_CUDA_); a bad value throws <see cref="PluginOptionException"/> naming where it came from.</summary>
    public static GpuKernelOptions FromCuda(PluginOptions options, Func<string, string?> environment)
    {
        const string P = "PLUGINENGINE_CUDA_";
        bool int8 = Choice(options, environment, "matvec", P + "MATVEC", "int8", "f32");
        bool cublas = Choice(options, environment, "gemm", P + "GEMM", "cublas", "kernels");
        bool graphs = Choice(options, environment, "graphs", P + "GRAPHS", "on", "off", defaultFirst: false);
        bool fusion = Choice(options, environment, "fusion", P + "FUSION", "on", "off");
        bool pdl = Choice(options, environment, "pdl", P + "PDL", "on", "off");
        bool smallBatch = Choice(options, environment, "batch_matvec", P + "BATCH_MATVEC", "int8", "f32");
        bool segments = Choice(options, environment, "segment_kernels", P + "SEGMENT_KERNELS", "on", "off");
        bool mma = Choice(options, environment, "mma", P + "MMA", "on", "off");
        int mmaMax = ReadCount(options, environment, "mma_max_tokens", P + "MMA_MAX_TOKENS", DefaultMmaMaxTokens, 1, "a number of tokens >= 1");
        int mmaMin = ReadCount(options, environment, "mma_min_tokens", P + "MMA_MIN_TOKENS", DefaultMmaMinTokens, 0, "a number of tokens >= 2, or 0 for the per-type default");
        if (mmaMin == 1) throw new PluginOptionException("mma_min_tokens: 1 is not a batch (give 2 or more, or 0 for the per-type default)");
        int mmaSplit = ReadCount(options, environment, "mma_split", P + "MMA_SPLIT", 0, 0, $"a number of K slices, 1 to {LaunchGeometry.MmqMaxSplits}, or 0 for as many as fill the GPU");
        if (mmaSplit > LaunchGeometry.MmqMaxSplits)
            throw new PluginOptionException($"mma_split: {mmaSplit} K slices (at most {LaunchGeometry.MmqMaxSplits}; 0 for as many as fill the GPU)");
        bool invariant = Choice(options, environment, "batch_invariant", P + "BATCH_INVARIANT", "on", "off", defaultFirst: false);
        bool flash = Choice(options, environment, "flash_attn", P + "FLASH_ATTN", "on", "off");
        bool tiled = Choice(options, environment, "weight_layout", P + "WEIGHT_LAYOUT", "tiled", "gguf");
        bool swiGluQuantize = Choice(options, environment, "swiglu_quantize", P + "SWIGLU_QUANTIZE", "on", "off", defaultFirst: false);
        bool qkvRope = Choice(options, environment, "qkv_rope", P + "QKV_ROPE", "on", "off", defaultFirst: false);
        bool plainFusion = Choice(options, environment, "plain_fusion", P + "PLAIN_FUSION", "on", "off");
        bool gemmInput = Choice(options, environment, "gemm_input", P + "GEMM_INPUT", "fused", "convert");
        bool gemmBatch = Choice(options, environment, "gemm_batch", P + "GEMM_BATCH", "on", "off");
        bool q8Cache = Choice(options, environment, "q8_0_cache", P + "Q8_0_CACHE", "on", "off");
        bool q4Cache = Choice(options, environment, "q4_0_cache", P + "Q4_0_CACHE", "on", "off");
        return new GpuKernelOptions(int8, cublas, graphs, fusion, pdl, ReadKernelDefines(options, environment, P), ReadAttentionChunk(options, environment, P),
                                    Int8SmallBatch: smallBatch, SegmentKernels: segments, IntegerMma: mma, MmaMaxTokens: mmaMax, BatchInvariant: invariant, MmaMinTokens: mmaMin,
                                    MmaSplit: mmaSplit, FlashAttention: flash, TiledWeights: tiled, SwiGluQuantize: swiGluQuantize, QkvRope: qkvRope, PlainFusion: plainFusion,
                                    GemmInputFused: gemmInput, GemmBatch: gemmBatch, DeviceQ8_0Cache: q8Cache, DeviceQ4_0Cache: q4Cache);
    }

    /// <summary>The HIP plugin's options (environment prefix PLUGINENGINE_HIP_): no vendor BLAS, graphs or programmatic launch.</summary>
    public static GpuKernelOptions FromHip(PluginOptions options, Func<string, string?> environment)
    {
        const string P = "PLUGINENGINE_HIP_";
        bool int8 = Choice(options, environment, "matvec", P + "MATVEC", "int8", "f32");
        bool fusion = Choice(options, environment, "fusion", P + "FUSION", "on", "off");
        bool readOnly = Choice(options, environment, "readonly_register", P + "READONLY_REGISTER", "on", "off", defaultFirst: false);
        bool smallBatch = Choice(options, environment, "batch_matvec", P + "BATCH_MATVEC", "int8", "f32");
        bool segments = Choice(options, environment, "segment_kernels", P + "SEGMENT_KERNELS", "on", "off");
        bool swiGluQuantize = Choice(options, environment, "swiglu_quantize", P + "SWIGLU_QUANTIZE", "on", "off", defaultFirst: false);
        bool qkvRope = Choice(options, environment, "qkv_rope", P + "QKV_ROPE", "on", "off", defaultFirst: false);
        bool plainFusion = Choice(options, environment, "plain_fusion", P + "PLAIN_FUSION", "on", "off", defaultFirst: false);
        bool q8Cache = Choice(options, environment, "q8_0_cache", P + "Q8_0_CACHE", "on", "off", defaultFirst: false);
        bool q4Cache = Choice(options, environment, "q4_0_cache", P + "Q4_0_CACHE", "on", "off", defaultFirst: false);
        return new GpuKernelOptions(int8, BlasPrompt: false, Graphs: false, fusion, ProgrammaticLaunch: false, ReadKernelDefines(options, environment, P),
                                    ReadAttentionChunk(options, environment, P), readOnly, smallBatch, segments, IntegerMma: false, FlashAttention: false,
                                    TiledWeights: false, SwiGluQuantize: swiGluQuantize, QkvRope: qkvRope, PlainFusion: plainFusion, DeviceQ8_0Cache: q8Cache,
                                    DeviceQ4_0Cache: q4Cache);
    }

    /// <summary>The <c>defines</c> option, validated and normalized to "NAME=INT;…".</summary>
    private static string ReadKernelDefines(PluginOptions options, Func<string, string?> environment, string prefix)
    {
        // plugins.json's value is read even when the environment wins, so the host never reports the key as unknown.
        string fromFile = options.GetString("defines", "")!;
        string? fromEnv = environment(prefix + "DEFINES");
        bool useEnv = !string.IsNullOrWhiteSpace(fromEnv);
        string spec = useEnv ? fromEnv! : fromFile;
        var defines = KernelSource.ParseTuningDefines(spec, useEnv ? $"environment variable {prefix}DEFINES" : $"{options.JsonPath}.defines");
        return string.Join(';', defines.Select(d => $"{d.Name}={d.Value.ToString(System.Globalization.CultureInfo.InvariantCulture)}"));
    }

    private static int ReadAttentionChunk(PluginOptions options, Func<string, string?> environment, string prefix)
        => ReadCount(options, environment, "attention_chunk", prefix + "ATTENTION_CHUNK", DefaultAttentionChunk, 0, "a number of positions >= 0 (0 = never split)");

    /// <summary>An integer option of at least <paramref name="min"/>; the environment wins over plugins.json.</summary>
    private static int ReadCount(PluginOptions options, Func<string, string?> environment, string key, string variable, int defaultValue, int min, string expected)
    {
        int fromFile = options.GetInt32(key, defaultValue, min: min);
        string? fromEnv = environment(variable);
        if (string.IsNullOrWhiteSpace(fromEnv)) return fromFile;
        if (int.TryParse(fromEnv.Trim(), System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int value) && value >= min)
            return value;
        throw new PluginOptionException($"environment variable {variable}: expected {expected}, got '{fromEnv}'");
    }

    /// <summary>True for <paramref name="first"/>, false for <paramref name="second"/>; the environment wins over plugins.json.</summary>
    private static bool Choice(PluginOptions options, Func<string, string?> environment, string key, string variable, string first, string second,
                               bool defaultFirst = true)
    {
        string fromFile = options.GetString(key, defaultFirst ? first : second)!;   // read always: the key is known either way
        string? fromEnv = environment(variable);
        string value = string.IsNullOrWhiteSpace(fromEnv) ? fromFile : fromEnv;
        string where = string.IsNullOrWhiteSpace(fromEnv) ? $"{options.JsonPath}.{key}" : $"environment variable {variable}";
        return value.Trim().ToLowerInvariant() switch
        {
            var v when v == first => true,
            var v when v == second => false,
            _ => throw new PluginOptionException($"{where}: expected '{first}' or '{second}', got '{value}'"),
        };
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// A Q8_0 KV cache on the GPU queue (docs/gpu-kernels.md#q8_0-kv-cache), over a recording native layer (no GPU): what the queue
/// says it supports, which kernels it launches to store into and attend over such a cache, and with what arguments; that
/// qkv_rope's epilogue and the tensor-core prompt attention are not used for it. What the kernels compute is the conformance
/// kit's, on a GPU.
/// </summary>
public sealed unsafe class GpuQ8_0CacheTests : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("pe-q8cache-").FullName;

    public void Dispose() => Directory.Delete(_cache, true);

    private const int Heads = 4, KvHeads = 2, HeadSize = 64, Cols = 256, Position = 17, Qd = Heads * HeadSize, Kvd = KvHeads * HeadSize;

    /// <summary>A launch: the kernel, its geometry and its arguments read as 8-byte words (pointers) and as ints (the low half).</summary>
    private sealed record Recorded(string Kernel, Launch Launch, ulong[] Words, int[] Ints)
    {
        public ulong Word(int i) => Words[i];
        public int Int(int i) => Ints[i];
    }

    // Arguments the tests read, per kernel: how many (the recorder sees only void**; every argument here is a pointer, an i64 or an int).
    private static readonly Dictionary<string, int> ArgumentCounts = new()
    {
        ["rope_store_kv"] = 16, ["rope_store_kv_rows"] = 16, ["store_kv_q8_0"] = 8, ["convert_f32_q8_0"] = 3, ["rope"] = 10,
        ["attention_decode_q8_0_h128"] = 11, ["attention_q8_0"] = 11, ["attention_split_q8_0_h128"] = 14, ["attention_rows_q8_0"] = 11, ["attention_rows_q8_0_h128"] = 11,
        ["attention_decode_q8_0"] = 11, ["attention_split_q8_0"] = 14,
        ["store_kv_q4_0"] = 8, ["convert_f32_q4_0"] = 3, ["attention_decode_q4_0_h128"] = 11, ["attention_mma_q4_0_d64"] = 10,
        ["attention_rows_q4_0_h128"] = 11,
        ["attention_mma_q8_0_d64"] = 10,
    };

    private (IComputeQueue Queue, BackendBuffer Buffer, List<Recorded> Launches) Setup(GpuKernelOptions? options = null, Func<string, int>? blocksPerSm = null)
    {
        var (device, native) = RecordingGpuNative.Device("gpu", [], peers: false, 0x1000_0000, _cache, options ?? GpuKernelOptions.Default with { BlasPrompt = false, DeviceQ8_0Cache = true });
        native.BlocksPerSm = blocksPerSm;
        var launches = new List<Recorded>();
        native.OnLaunch = (kernel, launch, args) =>
        {
            int n = ArgumentCounts.GetValueOrDefault(kernel);
            var words = new ulong[n];
            var ints = new int[n];
            for (int i = 0; i < n; i++)
            {
                // Each argument is read at its own size: 4-byte ints must not be read as 8 bytes past their end.
                ints[i] = *(int*)args[i];
                words[i] = IsInt(kernel, i) ? (ulong)(uint)ints[i] : *(ulong*)args[i];
            }
            launches.Add(new Recorded(kernel, launch, words, ints));
        };
        return (device.CreateQueue()!, device.Buffers.AllocateOwned("everything", 64 << 20), launches);
    }

    /// <summary>Whether argument <paramref name="i"/> of <paramref name="kernel"/> is a 4-byte int or float (kernels.cu's signatures).</summary>
    private static bool IsInt(string kernel, int i) => kernel switch
    {
        "rope_store_kv" or "rope_store_kv_rows" => i is >= 5 and <= 14 && !(kernel == "rope_store_kv_rows" && i == 11),
        "store_kv_q8_0" or "store_kv_q4_0" => i is >= 4 and <= 6,
        "convert_f32_q8_0" or "convert_f32_q4_0" => false,
        "rope" => i is >= 1 and <= 8,
        _ when kernel.StartsWith("attention_rows_", StringComparison.Ordinal) => i is >= 5 and <= 8,
        _ when kernel.StartsWith("attention_", StringComparison.Ordinal) => i is >= 4 and <= 8 || i == 13,
        _ => false,
    };

    private static ulong Address(DeviceTensor t) => ((GpuBuffer)t.Buffer).DevicePointer + (ulong)t.Offset;

    /// <summary>The attention block's tensors at fixed offsets of one buffer; the caches Q8_0 unless said.</summary>
    private sealed record Block(DeviceTensor X, MatMulTarget Q, MatMulTarget K, MatMulTarget V, DeviceTensor KCache, DeviceTensor VCache, DeviceTensor Output)
    {
        public static Block In(BackendBuffer b, GgmlType cache = GgmlType.Q8_0) => new(
            new DeviceTensor(b, 0, GgmlType.F32),
            new MatMulTarget(new DeviceTensor(b, 1 << 20, GgmlType.Q4_0), Qd, new DeviceTensor(b, 8 << 20, GgmlType.F32)),
            new MatMulTarget(new DeviceTensor(b, 2 << 20, GgmlType.Q4_0), Kvd, new DeviceTensor(b, 9 << 20, GgmlType.F32)),
            new MatMulTarget(new DeviceTensor(b, 3 << 20, GgmlType.Q4_0), Kvd, new DeviceTensor(b, 10 << 20, GgmlType.F32)),
            new DeviceTensor(b, 16 << 20, cache), new DeviceTensor(b, 24 << 20, cache), new DeviceTensor(b, 12 << 20, GgmlType.F32));

        public AttentionParams Params(int tokens, int first = Position) => new(tokens, first, Heads, KvHeads, HeadSize, 0.125f);

        public static RopeParams Rope => new(RopeMode.Normal, HeadSize, 10000f, 1f);
    }

    [Fact]
    public void Attention_and_convert_are_supported_for_f32_f16_and_q8_0_caches_and_q4_0_only_with_q4_0_cache_on()
    {
        var (queue, _, _) = Setup(GpuKernelOptions.Default with { BlasPrompt = false, DeviceQ4_0Cache = false });
        var (q4Queue, _, _) = Setup();
        foreach (var op in new[] { ComputeOp.Attention, ComputeOp.Convert })
        {
            Assert.True(queue.Supports(op, GgmlType.F32));
            Assert.True(queue.Supports(op, GgmlType.F16));
            Assert.True(queue.Supports(op, GgmlType.Q8_0));
            Assert.False(queue.Supports(op, GgmlType.Q4_0)); // q4_0_cache off: the core keeps such a cache on the CPU
            Assert.True(q4Queue.Supports(op, GgmlType.Q4_0));
            Assert.False(q4Queue.Supports(op, GgmlType.Q4_K));
        }
        Assert.Equal([GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0], KernelSource.CacheTypes);
        // On by default for CUDA since the kit's Q4_0 cache cases passed on an H100 (session 21); off for HIP until it has run on
        // an AMD GPU (GpuKernelOptions.DeviceQ4_0Cache).
        var none = new PluginOptions(new Dictionary<string, string>(), "$.plugins[1].options");
        Assert.True(GpuKernelOptions.FromCuda(none, _ => null).DeviceQ4_0Cache);
        Assert.True(GpuKernelOptions.Default.DeviceQ4_0Cache);
        Assert.False(GpuKernelOptions.FromCuda(none, n => n == "PLUGINENGINE_CUDA_Q4_0_CACHE" ? "off" : null).DeviceQ4_0Cache);
        Assert.False(GpuKernelOptions.FromHip(none, _ => null).DeviceQ4_0Cache);
        Assert.True(GpuKernelOptions.FromHip(new PluginOptions(new Dictionary<string, string> { ["q4_0_cache"] = "on" }, "$.plugins[3].options"), _ => null).DeviceQ4_0Cache);
    }

    [Fact]
    public void A_q4_0_cache_is_stored_converted_and_read_by_its_own_kernels()
    {
        var (queue, buffer, launches) = Setup();
        var b = Block.In(buffer, GgmlType.Q4_0);
        queue.RopeAndStoreKv(b.Q.Output, b.K.Output, b.V.Output, b.KCache, b.VCache, b.Params(1), Block.Rope, null);
        queue.Attention(b.Q.Output, b.KCache, b.VCache, b.Output, b.Params(1));
        queue.Attention(b.Q.Output, b.KCache, b.VCache, b.Output, b.Params(64, first: 0));
        queue.Convert(b.K.Output, b.KCache.Skip(64), 96);
        SequenceSegment[] segments = [new(0, 1, 5, 0), new(1, 2, 9, 64)];
        queue.AttentionSegments(b.Q.Output, b.KCache, b.VCache, b.Output, segments, b.Params(0));

        Assert.Equal(["rope_store_kv", "store_kv_q4_0", "attention_decode_q4_0_h128", LaunchGeometry.AttentionMmaKernelName(HeadSize, "q4_0"),
                      "convert_f32_q4_0", "attention_rows_q4_0_h128"], launches.Select(l => l.Kernel));
        Assert.Equal(-1, launches[0].Int(5)); // rotate only; store_kv_q4_0 quantizes k and v next
        Assert.Equal([Address(b.K.Output), Address(b.V.Output), Address(b.KCache), Address(b.VCache)], launches[1].Words[..4]);
        Assert.Equal((1, Kvd, Position), (launches[1].Int(4), launches[1].Int(5), launches[1].Int(6)));
        Assert.Equal(LaunchGeometry.QuantizeX(2 * Kvd / 32), launches[1].Launch);
        Assert.Equal([Address(b.K.Output), Address(b.KCache) + 2 * 18, 3UL], launches[4].Words); // 64 elements in: two 18-byte blocks
        Assert.Throws<ArgumentException>(() => queue.Convert(b.K.Output, b.KCache, 40));

        // With the option off, the queue refuses what Supports says no to.
        var (off, offBuffer, _) = Setup(GpuKernelOptions.Default with { BlasPrompt = false, DeviceQ4_0Cache = false });
        var c = Block.In(offBuffer, GgmlType.Q4_0);
        Assert.Throws<NotSupportedException>(() => off.Attention(c.Q.Output, c.KCache, c.VCache, c.Output, c.Params(1)));
        Assert.Throws<NotSupportedException>(() => off.Convert(c.K.Output, c.KCache, 64));
    }

    [Fact]
    public void With_q8_0_cache_off_a_q8_0_cache_is_left_to_the_cpu()
    {
        // On by default for CUDA since the kit's Q8_0 cases passed on an H100 (session 20); off by default for HIP until it has
        // run on an AMD GPU (GpuKernelOptions.DeviceQ8_0Cache).
        var none = new PluginOptions(new Dictionary<string, string>(), "$.plugins[1].options");
        Assert.True(GpuKernelOptions.FromCuda(none, _ => null).DeviceQ8_0Cache);
        Assert.False(GpuKernelOptions.FromCuda(none, n => n == "PLUGINENGINE_CUDA_Q8_0_CACHE" ? "off" : null).DeviceQ8_0Cache);
        Assert.False(GpuKernelOptions.FromHip(none, _ => null).DeviceQ8_0Cache);
        Assert.True(GpuKernelOptions.FromHip(none, n => n == "PLUGINENGINE_HIP_Q8_0_CACHE" ? "on" : null).DeviceQ8_0Cache);
        Assert.True(GpuKernelOptions.Default.DeviceQ8_0Cache);
        var (queue, _, _) = Setup(GpuKernelOptions.Default with { BlasPrompt = false, DeviceQ8_0Cache = false });
        Assert.False(queue.Supports(ComputeOp.Attention, GgmlType.Q8_0));
        Assert.False(queue.Supports(ComputeOp.Convert, GgmlType.Q8_0));
        Assert.True(queue.Supports(ComputeOp.Attention, GgmlType.F16));
    }

    [Fact]
    public void A_decode_step_rotates_then_quantizes_k_and_v_into_the_token_row_of_the_q8_0_caches()
    {
        var (queue, buffer, launches) = Setup();
        var b = Block.In(buffer);
        queue.RopeAndStoreKv(b.Q.Output, b.K.Output, b.V.Output, b.KCache, b.VCache, b.Params(1), Block.Rope, null);

        Assert.Equal(["rope_store_kv", "store_kv_q8_0"], launches.Select(l => l.Kernel));
        var rope = launches[0];
        Assert.Equal(-1, rope.Int(5)); // f16 = -1: rotate only, no element stores
        Assert.Equal(LaunchGeometry.Elementwise(LaunchGeometry.RopeStoreKvItems(1, Heads, KvHeads, HeadSize, HeadSize, stores: false)), rope.Launch);
        Assert.Equal((long)(Heads + KvHeads) * HeadSize / 2, LaunchGeometry.RopeStoreKvItems(1, Heads, KvHeads, HeadSize, HeadSize, stores: false));
        var store = launches[1];
        Assert.Equal([Address(b.K.Output), Address(b.V.Output), Address(b.KCache), Address(b.VCache)], store.Words[..4]);
        Assert.Equal((1, Kvd, Position, 0UL), (store.Int(4), store.Int(5), store.Int(6), store.Word(7)));
        Assert.Equal(LaunchGeometry.QuantizeX(2 * Kvd / 32), store.Launch); // a warp per 32-element block of k and of v
    }

    [Fact]
    public void Qkv_rope_falls_back_to_the_mat_vec_then_rope_store_kv_and_the_q8_0_store()
    {
        var (queue, buffer, launches) = Setup(GpuKernelOptions.Default with { BlasPrompt = false, QkvRope = true, DeviceQ8_0Cache = true });
        var b = Block.In(buffer);
        queue.MatMulRopeAndStoreKv(b.X, Cols, b.Q, b.K, b.V, b.KCache, b.VCache, b.Params(1), Block.Rope, null);

        Assert.DoesNotContain(launches, l => l.Kernel.StartsWith("matvec_rope_", StringComparison.Ordinal)); // its epilogue stores F32/F16 elements
        Assert.Equal(["quantize_x_q8", "matvec_q8_q4_0", "rope_store_kv", "store_kv_q8_0"], launches.Select(l => l.Kernel));

        // The same call on an F16 cache keeps the fused epilogue: the fallback is the cache type's.
        var (f16Queue, f16Buffer, f16Launches) = Setup(GpuKernelOptions.Default with { BlasPrompt = false, QkvRope = true, DeviceQ8_0Cache = true });
        var f = Block.In(f16Buffer, GgmlType.F16);
        f16Queue.MatMulRopeAndStoreKv(f.X, Cols, f.Q, f.K, f.V, f.KCache, f.VCache, f.Params(1), Block.Rope, null);
        Assert.Equal(["quantize_x_q8", "matvec_rope_q8_q4_0"], f16Launches.Select(l => l.Kernel));
    }

    [Fact]
    public void Without_fused_ops_k_and_v_are_converted_to_q8_0_blocks_at_the_token_row()
    {
        var (queue, buffer, launches) = Setup(GpuKernelOptions.Default with { BlasPrompt = false, FusedOps = false, DeviceQ8_0Cache = true });
        var b = Block.In(buffer);
        queue.RopeAndStoreKv(b.Q.Output, b.K.Output, b.V.Output, b.KCache, b.VCache, b.Params(3), Block.Rope, null);

        Assert.Equal(["rope", "rope", "convert_f32_q8_0", "convert_f32_q8_0"], launches.Select(l => l.Kernel));
        ulong rowBytes = Kvd / 32 * 34; // a position's row of Q8_0 blocks
        Assert.Equal([Address(b.K.Output), Address(b.KCache) + Position * rowBytes, 3UL * Kvd / 32], launches[2].Words);
        Assert.Equal([Address(b.V.Output), Address(b.VCache) + Position * rowBytes, 3UL * Kvd / 32], launches[3].Words);
        Assert.Equal(LaunchGeometry.QuantizeX(3 * Kvd / 32), launches[2].Launch);
    }

    [Fact]
    public void Convert_to_q8_0_takes_whole_blocks_only()
    {
        var (queue, buffer, launches) = Setup();
        var dst = new DeviceTensor(buffer, 16 << 20, GgmlType.Q8_0);
        queue.Convert(new DeviceTensor(buffer, 0, GgmlType.F32), dst.Skip(64), 96);
        Assert.Equal("convert_f32_q8_0", Assert.Single(launches).Kernel);
        Assert.Equal([Address(new DeviceTensor(buffer, 0, GgmlType.F32)), Address(dst) + 2 * 34, 3UL], launches[0].Words);
        Assert.Throws<ArgumentException>(() => queue.Convert(new DeviceTensor(buffer, 0, GgmlType.F32), dst, 40));
    }

    [Fact]
    public void Decode_attention_reads_the_q8_0_cache_with_its_own_kernels_short_and_split()
    {
        var (queue, buffer, launches) = Setup();
        var b = Block.In(buffer);
        queue.Attention(b.Q.Output, b.KCache, b.VCache, b.Output, b.Params(1));
        queue.Attention(b.Q.Output, b.KCache, b.VCache, b.Output, b.Params(1, first: 4000)); // past attention_chunk: split

        Assert.Equal(["attention_decode_q8_0_h128", "attention_split_q8_0_h128"], launches.Select(l => l.Kernel)); // heads of 64: the narrow kernels
        Assert.Equal([Address(b.Q.Output), Address(b.KCache), Address(b.VCache), Address(b.Output)], launches[0].Words[..4]);
        Assert.Equal(LaunchGeometry.Attention(Heads, 1), launches[0].Launch);
        Assert.Equal((uint)Heads, launches[1].Launch.GridX);
        Assert.True(launches[1].Launch.GridY > 1);
    }

    [Fact]
    public void A_decode_step_takes_the_narrow_kernels_for_heads_up_to_128_and_splits_over_the_blocks_the_gpu_holds()
    {
        // The recorder's GPU has 40 SMs; say the narrow split kernel fits 2 blocks an SM and the wide one 1 (its registers).
        var (queue, buffer, launches) = Setup(blocksPerSm: name => name.EndsWith("_h128", StringComparison.Ordinal) ? 2 : 1);
        var b = Block.In(buffer);
        const int first = 40_000;
        queue.Attention(b.Q.Output, b.KCache, b.VCache, b.Output, b.Params(1, first));                                  // heads of 64
        queue.Attention(b.Q.Output, b.KCache, b.VCache, b.Output, new AttentionParams(1, first, Heads, KvHeads, 256, 0.0625f)); // of 256
        queue.Attention(b.Q.Output, b.KCache, b.VCache, b.Output, new AttentionParams(1, 100, Heads, KvHeads, 128, 0.09f));  // of 128, short

        Assert.Equal(["attention_split_q8_0_h128", "attention_split_q8_0", "attention_decode_q8_0_h128"], launches.Select(l => l.Kernel));
        // 4 heads: 80 resident blocks give a head 20 of them, 40 give it 10 (LaunchGeometry.AttentionChunk).
        int narrowChunk = LaunchGeometry.AttentionChunk(first + 1, Heads, 80, GpuKernelOptions.DefaultAttentionChunk);
        int wideChunk = LaunchGeometry.AttentionChunk(first + 1, Heads, 40, GpuKernelOptions.DefaultAttentionChunk);
        Assert.Equal(LaunchGeometry.AttentionSplit(Heads, 20), launches[0].Launch);
        Assert.Equal(LaunchGeometry.AttentionSplit(Heads, 10), launches[1].Launch);
        Assert.Equal((narrowChunk, wideChunk), (launches[0].Int(13), launches[1].Int(13)));
    }

    [Fact]
    public void A_prompt_over_a_q8_0_cache_attends_on_the_tensor_cores_like_an_f16_one()
    {
        var (queue, buffer, launches) = Setup(); // sm_90, flash_attn on
        var q8 = Block.In(buffer);
        var f16 = Block.In(buffer, GgmlType.F16);
        queue.Attention(q8.Q.Output, q8.KCache, q8.VCache, q8.Output, q8.Params(64, first: 0));
        queue.Attention(f16.Q.Output, f16.KCache, f16.VCache, f16.Output, f16.Params(64, first: 0));
        queue.Attention(q8.Q.Output, q8.KCache, q8.VCache, q8.Output, q8.Params(8, first: 0)); // too few tokens for the mma kernel

        Assert.Equal([LaunchGeometry.AttentionMmaKernelName(HeadSize, "q8_0"), LaunchGeometry.AttentionMmaKernelName(HeadSize), "attention_q8_0"],
                     launches.Select(l => l.Kernel));
        Assert.Equal(LaunchGeometry.AttentionMma(Heads, 64), launches[0].Launch);
        Assert.Equal([Address(q8.Q.Output), Address(q8.KCache), Address(q8.VCache), Address(q8.Output)], launches[0].Words[..4]);
        Assert.Equal(LaunchGeometry.Attention(Heads, 8), launches[2].Launch);
    }

    [Fact]
    public void A_multi_sequence_batch_stores_through_the_segment_table_and_attends_with_attention_rows_q8_0_h128()
    {
        var (queue, buffer, launches) = Setup();
        var b = Block.In(buffer);
        SequenceSegment[] segments = [new(0, 1, 5, 0), new(1, 2, 9, 64)];
        queue.RopeAndStoreKvSegments(b.Q.Output, b.K.Output, b.V.Output, b.KCache, b.VCache, segments, b.Params(0), Block.Rope, null);
        queue.AttentionSegments(b.Q.Output, b.KCache, b.VCache, b.Output, segments, b.Params(0));

        Assert.Equal(["rope_store_kv_rows", "store_kv_q8_0", "attention_rows_q8_0_h128"], launches.Select(l => l.Kernel));
        Assert.Equal(-1, launches[0].Int(5));
        ulong table = launches[0].Word(11);
        Assert.NotEqual(0UL, table);
        var store = launches[1];
        Assert.Equal([Address(b.K.Output), Address(b.V.Output), Address(b.KCache), Address(b.VCache)], store.Words[..4]);
        Assert.Equal((3, Kvd, table), (store.Int(4), store.Int(5), store.Word(7))); // 3 rows, their cache rows from the table
        Assert.Equal(LaunchGeometry.QuantizeX(2 * 3 * Kvd / 32), store.Launch);
        Assert.Equal(table, launches[2].Word(4));
    }

    [Fact]
    public void A_q8_0_or_q4_0_cache_needs_heads_of_whole_blocks()
    {
        var (queue, buffer, _) = Setup();
        var b = Block.In(buffer);
        var p = new AttentionParams(1, Position, 4, 2, 48, 0.125f);
        Assert.Throws<NotSupportedException>(() => queue.Attention(b.Q.Output, b.KCache, b.VCache, b.Output, p));
        Assert.Throws<NotSupportedException>(() => queue.RopeAndStoreKv(b.Q.Output, b.K.Output, b.V.Output, b.KCache, b.VCache, p,
                                                                         new RopeParams(RopeMode.Normal, 48, 10000f, 1f), null));
        Assert.Throws<NotSupportedException>(() => queue.Attention(b.Q.Output, new DeviceTensor(buffer, 16 << 20, GgmlType.Q4_0),
                                                                   new DeviceTensor(buffer, 24 << 20, GgmlType.Q4_0), b.Output, p)); // Q4_0 too
    }
}

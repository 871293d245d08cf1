using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Cuda;

/// <summary>Slide and alloc-size arithmetic, launch shapes and the assembled kernel source: everything checkable without a GPU.</summary>
public sealed class CudaKernelGeometryTests
{
    [Theory]
    [InlineData(GgmlType.Q4_0, 800, 4, 126)]   // 800 % 512 = 288 → 224 more elements = 7 blocks × 18 B
    [InlineData(GgmlType.Q8_0, 288, 3, 238)]   // 224 elements = 7 blocks × 34 B
    [InlineData(GgmlType.Q4_K, 768, 2, 144)]   // 256 elements = 1 super-block × 144 B
    [InlineData(GgmlType.Q5_K, 1792, 5, 176)]
    [InlineData(GgmlType.Q6_K, 256, 7, 210)]   // 256 elements = 1 super-block × 210 B
    [InlineData(GgmlType.Q4_0, 4096, 3, 0)]    // a multiple of the chunk: no slide
    [InlineData(GgmlType.F16, 800, 3, 0)]      // plain types are read element by element: never a slide
    [InlineData(GgmlType.F32, 300, 3, 0)]
    public void Alloc_size_is_the_tensor_plus_the_512_element_slide_of_quantized_rows(GgmlType type, long ne0, long rows, long slide)
    {
        var tensor = new TensorInfo("w", type, [ne0, rows]);
        Assert.Equal(tensor.ByteSize + slide, LaunchGeometry.AllocSize(tensor));
        Assert.Equal(TensorPadding.SlideBytes(tensor, 512), LaunchGeometry.AllocSize(tensor) - tensor.ByteSize);
    }

    [Fact]
    public void The_slide_covers_exactly_what_the_last_chunk_of_the_last_row_reads()
    {
        // The matmul kernel reads chunk c of a row as bytes [rowSize(c·512), rowSize((c+1)·512)) from the row start.
        foreach (var type in new[] { GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K })
        {
            int block = GgmlTypes.Get(type).BlockSize;
            for (long ne0 = block; ne0 <= 2048; ne0 += block)
            {
                var tensor = new TensorInfo("w", type, [ne0, 3]);
                long chunks = LaunchGeometry.CeilDiv(ne0, LaunchGeometry.RowChunkElements);
                long lastRowStart = tensor.RowBytes * (tensor.RowCount - 1);
                long readEnd = lastRowStart + GgmlTypes.RowSize(type, chunks * LaunchGeometry.RowChunkElements);
                Assert.Equal(readEnd, LaunchGeometry.AllocSize(tensor));
            }
        }
    }

    [Theory]
    [InlineData(4096L, 1, 1024u, 1u)]
    [InlineData(4097L, 1, 1025u, 1u)]
    [InlineData(32000L, 7, 8000u, 1u)]
    [InlineData(256L, 8, 64u, 1u)]
    [InlineData(256L, 9, 64u, 2u)]
    [InlineData(5632L, 512, 1408u, 64u)]
    public void Matmul_launch_is_a_warp_per_row_and_a_block_row_per_token_group(long rows, int tokens, uint gridX, uint gridY)
    {
        var launch = LaunchGeometry.MatMul(rows, tokens);
        Assert.Equal(new Launch(gridX, gridY, 128), launch);
        Assert.Equal(tokens > 1, LaunchGeometry.UsesBatchedMatMul(tokens));
        // every row and token is covered, and no block is wholly idle
        Assert.True(launch.GridX * (launch.BlockX / 32) >= rows && (launch.GridX - 1) * (launch.BlockX / 32) < rows);
        int perBlock = tokens > 1 ? LaunchGeometry.MatMulTokensPerBlock : 1;
        Assert.True(launch.GridY * perBlock >= tokens && (launch.GridY - 1) * perBlock < tokens);
    }

    [Fact]
    public void Other_launch_shapes_cover_their_work()
    {
        Assert.Equal(new Launch(5, 1, 256), LaunchGeometry.GetRows(5, 4096));
        Assert.Equal(new Launch(5, 2, 256), LaunchGeometry.GetRows(5, 4097));
        Assert.Equal(new Launch(1, 1, 256), LaunchGeometry.Elementwise(1));
        Assert.Equal(new Launch(2, 1, 256), LaunchGeometry.Elementwise(257));
        Assert.Equal(new Launch(65535, 1, 256), LaunchGeometry.Elementwise(1L << 40)); // grid-stride: capped, the kernel loops
        Assert.Equal(new Launch(32, 7, 512), LaunchGeometry.Attention(32, 7));
        Assert.Throws<ArgumentOutOfRangeException>(() => LaunchGeometry.MatMul(0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => LaunchGeometry.MatMul(16, 0));
    }

    [Fact]
    public void Source_starts_with_the_host_constants_the_kernels_require()
    {
        string source = KernelSource.CudaDefault;
        Assert.StartsWith("#define ROW_CHUNK 512\n#define MATMUL_TOKENS_PER_BLOCK 8\n#define MATMUL_Q8_TOKENS 8\n#define MMQ_KSPLIT 8\n#define MMQ_ROWS 32\n#define TQ_GROUP 128\n#define ATTENTION_MAX_HEAD 256\n#define ATTENTION_WARPS 16\n", source);
        foreach (var (name, _) in KernelSource.Defines)
            Assert.Contains($"#ifndef {name}", source); // kernels.cu refuses to compile without each define
        Assert.DoesNotContain("#include", source);     // NVRTC compiles it alone
    }

    [Fact]
    public void Every_kernel_the_queue_looks_up_is_defined_in_the_source()
    {
        string source = KernelSource.CudaDefault;
        var names = KernelSource.KernelNames().ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
        Assert.Equal(3 * 8 + KernelSource.Int8MatVecTypes.Count + 3 * KernelSource.DecodeMatVecTypes.Count + KernelSource.DequantizeF16Types.Count + 3 * KernelSource.MmaTypes.Count + 2 * KernelSource.MmaCacheTypes.Count
                     + 7 * KernelSource.CacheTypes.Count + 11 // attention_, _decode_, _split_, _rows_, and the narrow _decode_, _split_, _rows_
                     + 2 * KernelSource.BlockCacheTypes.Count // convert_f32_, store_kv_
                     + LaunchGeometry.MmqTokenTiles.Count + 1, names.Count); // the tiled Q4_0 kernels: mmq and tile_q4_0
        Assert.Contains($"MMQ_KERNELS({KernelSource.TiledQ4_0Suffix}, ", source);
        foreach (var type in KernelSource.WeightTypes)
            Assert.Contains($"WEIGHT_KERNELS({KernelSource.WeightSuffix(type)}, ", source);
        foreach (var type in KernelSource.Int8MatVecTypes)
            Assert.Contains($"MATVEC_Q8_KERNEL({KernelSource.WeightSuffix(type)}, ", source);
        foreach (var type in KernelSource.DecodeMatVecTypes.Except(KernelSource.Int8MatVecTypes))
            Assert.Contains($"MATVEC_KERNELS({KernelSource.WeightSuffix(type)}, ", source);
        foreach (var type in KernelSource.DequantizeF16Types)
            Assert.Contains($"DEQUANTIZE_F16_KERNEL({KernelSource.WeightSuffix(type)}, ", source);
        foreach (var type in KernelSource.MmaTypes)
            Assert.Contains($"MMQ_KERNELS({KernelSource.WeightSuffix(type)}, ", source);
        foreach (string s in KernelSource.MmaCacheTypes.Select(t => KernelSource.WeightSuffix(t)!)) // the tensor-core prompt attention
            foreach (int d in new[] { 64, 128 })
                Assert.Contains($"ATTENTION_MMA_KERNEL({s}, T_{s.ToUpperInvariant()}, {d})", source);
        foreach (string s in KernelSource.CacheTypes.Select(t => KernelSource.WeightSuffix(t)!)) // the KV cache types' attention kernels
        {
            Assert.Contains($"ATTENTION_KERNEL(attention_{s}, ", source);
            Assert.Contains($"ATTENTION_KERNEL(attention_decode_{s}, ", source);
            Assert.Contains($"ATTENTION_SPLIT_KERNEL(attention_split_{s}, ", source);
            Assert.Contains($"ATTENTION_KERNEL(attention_decode_{s}_h128, ", source);
            Assert.Contains($"ATTENTION_SPLIT_KERNEL(attention_split_{s}_h128, ", source);
            Assert.Contains($"ATTENTION_ROWS_KERNEL(attention_rows_{s}_h128, ", source);
            Assert.Contains($"ATTENTION_ROWS_KERNEL(attention_rows_{s}, ", source);
        }
        foreach (var type in KernelSource.BlockCacheTypes)
            Assert.Contains($"CACHE_BLOCK_KERNELS({KernelSource.WeightSuffix(type)}, T_{KernelSource.WeightSuffix(type)!.ToUpperInvariant()})", source);
        string[] macroMade = ["matmul_", "get_rows_", "matvec_", "swiglu_", "dequantize_f16_", "attention_", "mmq_", "convert_f32_q", "store_kv_q"];
        foreach (string name in names.Where(n => !macroMade.Any(p => n.StartsWith(p, StringComparison.Ordinal))))
            Assert.Contains($"extern \"C\" __global__ void {name}(", source);
    }

    [Theory]
    [InlineData(2, 1, 1u)]
    [InlineData(16, 1, 1u)]
    [InlineData(17, 2, 1u)]
    [InlineData(32, 2, 1u)]
    [InlineData(33, 4, 1u)]
    [InlineData(64, 4, 1u)]
    [InlineData(65, 4, 2u)]
    [InlineData(512, 4, 8u)]
    public void Mmq_takes_the_fewest_token_tiles_and_groups_of_64_beyond(int tokens, int tiles, uint groups)
    {
        Assert.Equal(tiles, LaunchGeometry.MmqTiles(tokens));
        Assert.Equal(new Launch(128, groups, 256), LaunchGeometry.Mmq(4096, tokens));
        Assert.Equal(344u, LaunchGeometry.Mmq(11008, tokens).GridX);
        Assert.Equal(1u, LaunchGeometry.Mmq(1, tokens).GridX);
    }

    [Fact]
    public void Tiled_q4_0_layout_takes_whole_8_row_groups_and_128_element_rows()
    {
        // The 7B and TinyLlama shapes have it (docs/gpu-kernels.md#tiled-q4_0-weights); rows of 37, 96 columns or another type do not.
        Assert.True(LaunchGeometry.HasTiledLayout(GgmlType.Q4_0, 4096, 4096));
        Assert.True(LaunchGeometry.HasTiledLayout(GgmlType.Q4_0, 11008, 4096));
        Assert.True(LaunchGeometry.HasTiledLayout(GgmlType.Q4_0, 4096, 11008));
        Assert.True(LaunchGeometry.HasTiledLayout(GgmlType.Q4_0, 256, 2048));
        Assert.True(LaunchGeometry.HasTiledLayout(GgmlType.Q4_0, 64, 768));
        Assert.False(LaunchGeometry.HasTiledLayout(GgmlType.Q4_0, 37, 768));
        Assert.False(LaunchGeometry.HasTiledLayout(GgmlType.Q4_0, 64, 96));
        Assert.False(LaunchGeometry.HasTiledLayout(GgmlType.Q4_0, 64, 544));
        Assert.False(LaunchGeometry.HasTiledLayout(GgmlType.Q8_0, 4096, 4096));
        Assert.False(LaunchGeometry.HasTiledLayout(GgmlType.Q4_K, 4096, 4096));
        // Same bytes as GGUF's layout: 18 per 32 elements.
        Assert.Equal(4096L * 4096 / 32 * 18, TiledWeightCopies.ByteSize(4096, 4096));
        // tile_q4_0: a thread per (row group, block group, lane).
        Assert.Equal(new Launch(4096u / 8 * 32 * 32 / 256, 1, 256), LaunchGeometry.TileQ4_0(4096, 4096));
    }

    [Theory]
    // H100 (132 SMs), 32 heads: at most 4 blocks a head, so the option's 512 holds up to 2,048 positions and grows beyond.
    [InlineData(300, 32, 132, 512, 512)]
    [InlineData(2048, 32, 132, 512, 512)]
    [InlineData(2049, 32, 132, 512, 576)]
    [InlineData(3969, 32, 132, 512, 1024)]
    [InlineData(16384, 32, 132, 512, 4096)]
    [InlineData(16384, 32, 132, 8192, 8192)]  // the option is a floor
    [InlineData(16384, 256, 132, 512, 16384)] // more heads than SMs: one block a head
    [InlineData(3969, 32, 132, 0, 0)]         // 0: never split
    public void Decode_attention_gives_a_head_at_most_its_share_of_the_SMs(int positions, int heads, int sms, int option, int chunk)
    {
        Assert.Equal(chunk, LaunchGeometry.AttentionChunk(positions, heads, sms, option));
        if (chunk > 0)
        {
            Assert.True(chunk % 64 == 0 || chunk == option); // whole 64-position steps, unless the option's own value
            Assert.True((long)heads * LaunchGeometry.AttentionSplits(positions, chunk) <= Math.Max(sms, heads) || chunk == option);
        }
    }

    [Fact]
    public void Mmq_splits_K_until_the_gpu_is_full_and_never_by_the_token_count()
    {
        // An H200 / H100: 132 SMs, 2 blocks each. 4096 rows are 128 tiles of 32: two K slices fill the 264 slots.
        Assert.Equal(2, LaunchGeometry.MmqSplits(4096, 4096 / 32, 32, 264));
        Assert.Equal(new Launch(128, 1, 256, 2), LaunchGeometry.Mmq(4096, 16, 32, 2));
        // 11008 rows (344 tiles) and a 32000-row head fill it alone.
        Assert.Equal(1, LaunchGeometry.MmqSplits(11008, 4096 / 32, 32, 264));
        Assert.Equal(1, LaunchGeometry.MmqSplits(32000, 4096 / 32, 32, 264));
        // Short rows keep at least MmqMinStepsPerWarp steps a warp: 2048 Q4_K columns are 32 steps, one slice of 8 warps x 4.
        Assert.Equal(1, LaunchGeometry.MmqSplits(256, 2048 / 64, 32, 264));
        Assert.Equal(2, LaunchGeometry.MmqSplits(256, 4096 / 64, 32, 264));
        // A small matrix on a big GPU: at most MmqMaxSplits.
        Assert.Equal(LaunchGeometry.MmqMaxSplits, LaunchGeometry.MmqSplits(32, 11008 / 32, 32, 264));
        Assert.Equal(64, LaunchGeometry.MmqStepElements(GgmlType.Q4_K));
        Assert.Equal(32, LaunchGeometry.MmqStepElements(GgmlType.Q4_0));
        Assert.Equal(32, LaunchGeometry.MmqStepElements(GgmlType.Q8_0));
        // The token count moves y only.
        foreach (int tokens in new[] { 1, 9, 16, 31, 64, 200 }) Assert.Equal(3u, LaunchGeometry.Mmq(4096, tokens, 32, 3).GridZ);
    }

    [Fact]
    public void Prompt_attention_on_the_tensor_cores_takes_64_tokens_of_a_head_per_block_of_4_warps()
    {
        Assert.Equal(new Launch(32, 8, 128), LaunchGeometry.AttentionMma(32, 512));
        Assert.Equal(new Launch(8, 2, 128), LaunchGeometry.AttentionMma(8, 80));
        Assert.Equal(new Launch(8, 1, 128), LaunchGeometry.AttentionMma(8, LaunchGeometry.AttentionMmaMinTokens));
        Assert.Equal("attention_mma_f16_d128", LaunchGeometry.AttentionMmaKernelName(128));
        Assert.Equal("attention_mma_q8_0_d64", LaunchGeometry.AttentionMmaKernelName(64, "q8_0"));
        Assert.Contains("#define FA_WARPS 4\n", KernelSource.CudaDefault);
    }

    [Fact]
    public void Mmq_rows_per_block_may_be_moved_by_a_tuning_define_and_the_launch_follows()
    {
        Assert.Equal(LaunchGeometry.MmqRows, KernelSource.MmqRows(""));
        Assert.Equal(16, KernelSource.MmqRows("MMQ_PREFETCH=4;MMQ_ROWS=16"));
        Assert.Equal(512u, LaunchGeometry.Mmq(4096, 16, KernelSource.MmqRows("MMQ_ROWS=8")).GridX);
        Assert.Contains("#define MMQ_ROWS 16\n", KernelSource.Assemble(KernelDialect.Cuda, 32, KernelSource.ParseTuningDefines("MMQ_ROWS=16", "defines")));
        Assert.DoesNotContain("#define MMQ_ROWS 32", KernelSource.Assemble(KernelDialect.Cuda, 32, KernelSource.ParseTuningDefines("MMQ_ROWS=16", "defines")));
        Assert.Throws<PluginOptionException>(() => KernelSource.ParseTuningDefines("MMQ_ROWS=24", "defines"));
        Assert.Throws<PluginOptionException>(() => KernelSource.ParseTuningDefines("MMQ_KSPLIT=4", "defines"));
    }

    [Fact]
    public void Decode_norm_spreads_one_row_over_blocks_of_256()
    {
        Assert.Equal(new Launch(16, 1, 256), LaunchGeometry.RmsNormRow(4096));
        Assert.Equal(new Launch(16, 9, 256), LaunchGeometry.RmsNormRow(4096, 9)); // a batch's rows in grid y
    }

    [Fact]
    public unsafe void Launch_config_structs_match_cuda_h()
    {
        // CUlaunchConfig: 7 uints, stream at 32, attributes at 40, count at 48; CUlaunchAttribute: id, pad, 64-byte value.
        Assert.Equal(56, sizeof(PluginEngine.Backends.Cuda.Native.CudaDriver.LaunchConfig));
        Assert.Equal(72, sizeof(PluginEngine.Backends.Cuda.Native.CudaDriver.LaunchAttribute));
        Assert.Equal(32, (int)System.Runtime.InteropServices.Marshal.OffsetOf<PluginEngine.Backends.Cuda.Native.CudaDriver.LaunchConfig>("Stream"));
        Assert.Equal(48, (int)System.Runtime.InteropServices.Marshal.OffsetOf<PluginEngine.Backends.Cuda.Native.CudaDriver.LaunchConfig>("AttributeCount"));
    }

    [Fact]
    public void Every_kernel_waits_for_its_predecessor_before_touching_memory()
    {
        // With programmatic dependent launch a kernel may start while the previous one runs: one without PDL_ENTRY (or the
        // PDL_SMALL_ENTRY that wraps it, docs/gpu-kernels.md#decode-prefetch) would race. The macro's own definition is not
        // a kernel's entry. The decode mat-vecs' entry is conditional: with MATVEC_PRELOAD / SWIGLU_PRELOAD they wait later,
        // after their first weight loads (PDL_ENTRY_AFTER_PRELOAD, docs/gpu-kernels.md#decode-preload), which this does not count.
        string body = System.Text.RegularExpressions.Regex.Replace(KernelSource.CudaDefault, @"(?m)^#define .*$", "");
        int kernels = System.Text.RegularExpressions.Regex.Matches(body, @"extern ""C"" __global__ void").Count;
        int entries = System.Text.RegularExpressions.Regex.Matches(body, @"\bPDL_(?:SMALL_)?ENTRY\(\);").Count;
        Assert.True(kernels >= 16, $"{kernels} kernel definitions");
        Assert.Equal(kernels, entries);
    }

    [Theory]
    [InlineData(1, 32, 32, 128, 128, 32 * 64 + 32 * 64 + 32 * 128)]   // Llama 2 7B decode: q pairs, k pairs, v elements
    [InlineData(5, 4, 2, 64, 32, 5 * 4 * 16 + 5 * 2 * (16 + 32) + 5 * 2 * 64)] // partial rotation: k's unrotated tail is stored too
    public void Rope_store_kv_items_cover_q_pairs_k_pairs_and_tail_and_v(int tokens, int heads, int kvHeads, int headSize, int dims, long expected)
        => Assert.Equal(expected, LaunchGeometry.RopeStoreKvItems(tokens, heads, kvHeads, headSize, dims));

    [Theory]
    [InlineData(1, 32, 32, 128, 128, 32 * 64 + 32 * 64)]   // a Q8_0 cache: rope_store_kv only rotates (store_kv_q8_0 stores k and v)
    [InlineData(5, 4, 2, 64, 32, 5 * 4 * 16 + 5 * 2 * 16)] // partial rotation: k's unrotated tail is left where it is
    public void Rope_store_kv_items_without_stores_are_the_rotated_pairs(int tokens, int heads, int kvHeads, int headSize, int dims, long expected)
        => Assert.Equal(expected, LaunchGeometry.RopeStoreKvItems(tokens, heads, kvHeads, headSize, dims, stores: false));

    [Fact]
    public unsafe void MatVec_targets_match_the_kernel_struct_layout()
    {
        // kernels.cu: struct MatVecTarget { const u8* w; i64 rowBytes; float* y; int rows; int firstBlock; } x 3, then int count, accumulate.
        Assert.Equal(3 * 32 + 8, sizeof(MatVecTargets));
        var t = new MatVecTargets { Count = 2, Accumulate = 1 };
        t.Set(1, 0x1000, 2304, 0x2000, 4096);
        ulong* words = (ulong*)&t;
        Assert.Equal(0x1000UL, words[4]);
        Assert.Equal(2304UL, words[5]);
        Assert.Equal(0x2000UL, words[6]);
        Assert.Equal(4096UL, words[7]); // rows in the low 32 bits, first block 0
        t.SetFirstBlock(1, 128);           // mmq: target 1's rows start at grid x 128
        Assert.Equal(4096UL | (128UL << 32), words[7]);
        Assert.Equal(4096, t.Rows(1));
        Assert.Equal(2, ((int*)&t)[24]);
        Assert.Equal(1, ((int*)&t)[25]);
        Assert.Equal(0x2000UL, t.Output(1));
        Assert.Equal(4096, t.Rows(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new MatVecTargets().Set(3, 0, 0, 0, 1));
    }

    [Theory]
    [InlineData(GgmlType.Q5_0)]
    [InlineData(GgmlType.Q2_K)]
    [InlineData(GgmlType.IQ4_NL)]
    public void Types_without_kernels_have_no_kernel_suffix(GgmlType type) => Assert.Null(KernelSource.WeightSuffix(type));

    [Fact]
    public void Cache_key_changes_with_source_architecture_and_compiler()
    {
        string k = KernelSource.CacheKey("src", "sm_90", "13.0");
        Assert.Matches("^[0-9a-f]{32}$", k);
        Assert.Equal(k, KernelSource.CacheKey("src", "sm_90", "13.0"));
        Assert.NotEqual(k, KernelSource.CacheKey("src2", "sm_90", "13.0"));
        Assert.NotEqual(k, KernelSource.CacheKey("src", "sm_89", "13.0"));
        Assert.NotEqual(k, KernelSource.CacheKey("src", "sm_90", "12.8"));
    }
}

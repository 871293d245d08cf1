using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Cuda;

/// <summary>The matmul choices of the CUDA queue (plugins.json options, environment overrides) and their launch shapes.</summary>
public sealed class GpuKernelOptionsTests
{
    private static PluginOptions Options(params (string Key, string Value)[] values)
        => new(values.ToDictionary(v => v.Key, v => v.Value), "$.plugins[1].options");

    [Fact]
    public void Defaults_are_int8_matvec_and_cublas_prompts()
    {
        var o = GpuKernelOptions.FromCuda(Options(), _ => null);
        Assert.Equal(GpuKernelOptions.Default, o);
        Assert.True(o.Int8MatVec);
        Assert.True(o.BlasPrompt);
        Assert.False(o.Graphs); // direct launches with programmatic launch measured faster than per-step graphs
    }

    [Fact]
    public void The_small_batch_int8_kernel_is_on_by_default_and_can_be_turned_off_for_both_vendors()
    {
        Assert.True(GpuKernelOptions.FromCuda(Options(), _ => null).Int8SmallBatch);
        Assert.False(GpuKernelOptions.FromCuda(Options(("batch_matvec", "f32")), _ => null).Int8SmallBatch);
        Assert.False(GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_BATCH_MATVEC" ? "f32" : null).Int8SmallBatch);
        Assert.True(GpuKernelOptions.FromHip(Options(), _ => null).Int8SmallBatch);
        Assert.False(GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_HIP_BATCH_MATVEC" ? "f32" : null).Int8SmallBatch);
        var bad = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("batch_matvec", "fast")), _ => null));
        Assert.Contains("batch_matvec", bad.Message);
    }

    [Fact]
    public void Step_graphs_can_be_turned_on_and_off()
    {
        Assert.True(GpuKernelOptions.FromCuda(Options(("graphs", "on")), _ => null).Graphs);
        Assert.False(GpuKernelOptions.FromCuda(Options(("graphs", "off")), _ => null).Graphs);
        Assert.False(GpuKernelOptions.FromCuda(Options(("graphs", "on")), k => k == "PLUGINENGINE_CUDA_GRAPHS" ? "off" : null).Graphs);
        Assert.True(GpuKernelOptions.FromCuda(Options(("graphs", "off")), k => k == "PLUGINENGINE_CUDA_GRAPHS" ? "ON" : null).Graphs);
        Assert.True(GpuKernelOptions.FromCuda(Options(), _ => null).FusedOps);
        Assert.False(GpuKernelOptions.FromCuda(Options(("fusion", "off")), _ => null).FusedOps);
        Assert.False(GpuKernelOptions.FromCuda(Options(("fusion", "on")), k => k == "PLUGINENGINE_CUDA_FUSION" ? "off" : null).FusedOps);
        Assert.True(GpuKernelOptions.FromCuda(Options(), _ => null).ProgrammaticLaunch);
        Assert.False(GpuKernelOptions.FromCuda(Options(("pdl", "off")), _ => null).ProgrammaticLaunch);
        Assert.False(GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_PDL" ? "off" : null).ProgrammaticLaunch);
    }

    [Fact]
    public void Int8_mma_is_on_by_default_from_9_tokens_5_for_Q4_K_up_to_31_and_these_are_options()
    {
        var o = GpuKernelOptions.FromCuda(Options(), _ => null);
        Assert.True(o.IntegerMma);
        Assert.Equal(9, o.MmaMinTokensFor(GgmlType.Q4_0));
        Assert.Equal(9, o.MmaMinTokensFor(GgmlType.Q8_0));
        Assert.Equal(5, o.MmaMinTokensFor(GgmlType.Q4_K));
        Assert.Equal(LaunchGeometry.BlasMinTokens - 1, o.MmaMaxTokens);
        Assert.False(GpuKernelOptions.FromCuda(Options(("mma", "off")), _ => null).IntegerMma);
        Assert.True(GpuKernelOptions.FromCuda(Options(("mma", "off")), k => k == "PLUGINENGINE_CUDA_MMA" ? "on" : null).IntegerMma);
        Assert.Equal(512, GpuKernelOptions.FromCuda(Options(("mma_max_tokens", "512")), _ => null).MmaMaxTokens);
        Assert.Equal(64, GpuKernelOptions.FromCuda(Options(("mma_max_tokens", "512")), k => k == "PLUGINENGINE_CUDA_MMA_MAX_TOKENS" ? "64" : null).MmaMaxTokens);
        Assert.Equal(GpuKernelOptions.DefaultMmaMinTokens, o.MmaMinTokens);
        Assert.Equal(12, GpuKernelOptions.FromCuda(Options(("mma_min_tokens", "12")), _ => null).MmaMinTokensFor(GgmlType.Q4_K));
        Assert.Equal(4, GpuKernelOptions.FromCuda(Options(("mma_min_tokens", "12")), k => k == "PLUGINENGINE_CUDA_MMA_MIN_TOKENS" ? "4" : null).MmaMinTokens);
        var min = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("mma_min_tokens", "1")), _ => null));
        Assert.Contains("mma_min_tokens", min.Message);
        var e = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_MMA_MAX_TOKENS" ? "0" : null));
        Assert.Contains("PLUGINENGINE_CUDA_MMA_MAX_TOKENS", e.Message);
        Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("mma", "maybe")), _ => null));
        Assert.True(o.FlashAttention);
        Assert.False(GpuKernelOptions.FromCuda(Options(("flash_attn", "off")), _ => null).FlashAttention);
        Assert.True(GpuKernelOptions.FromCuda(Options(("flash_attn", "off")), k => k == "PLUGINENGINE_CUDA_FLASH_ATTN" ? "on" : null).FlashAttention);
        Assert.False(GpuKernelOptions.FromHip(Options(), _ => null).FlashAttention);
        Assert.True(o.TiledWeights);
        Assert.False(GpuKernelOptions.FromCuda(Options(("weight_layout", "gguf")), _ => null).TiledWeights);
        Assert.True(GpuKernelOptions.FromCuda(Options(("weight_layout", "gguf")), k => k == "PLUGINENGINE_CUDA_WEIGHT_LAYOUT" ? "tiled" : null).TiledWeights);
        Assert.Contains("weight_layout", Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("weight_layout", "rows")), _ => null)).Message);
        Assert.False(o.SwiGluQuantize);
        Assert.True(GpuKernelOptions.FromCuda(Options(("swiglu_quantize", "on")), _ => null).SwiGluQuantize);
        Assert.True(GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_HIP_SWIGLU_QUANTIZE" ? "on" : null).SwiGluQuantize);
        Assert.Contains("swiglu_quantize", Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("swiglu_quantize", "yes")), _ => null)).Message);
        Assert.False(o.QkvRope);
        Assert.True(GpuKernelOptions.FromCuda(Options(("qkv_rope", "on")), _ => null).QkvRope);
        Assert.True(GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_HIP_QKV_ROPE" ? "on" : null).QkvRope);
        Assert.Contains("qkv_rope", Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("qkv_rope", "no")), _ => null)).Message);
        Assert.True(o.PlainFusion);
        Assert.False(GpuKernelOptions.FromCuda(Options(("plain_fusion", "off")), _ => null).PlainFusion);
        Assert.False(GpuKernelOptions.FromHip(Options(), _ => null).PlainFusion); // HIP: off until it has run on an AMD GPU
        Assert.True(GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_HIP_PLAIN_FUSION" ? "on" : null).PlainFusion);
        Assert.True(o.GemmInputFused);
        Assert.False(GpuKernelOptions.FromCuda(Options(("gemm_input", "convert")), _ => null).GemmInputFused);
        Assert.True(GpuKernelOptions.FromCuda(Options(("gemm_input", "convert")), k => k == "PLUGINENGINE_CUDA_GEMM_INPUT" ? "fused" : null).GemmInputFused);
        Assert.Contains("gemm_input", Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("gemm_input", "on")), _ => null)).Message);
        Assert.True(o.GemmBatch);
        Assert.False(GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_GEMM_BATCH" ? "off" : null).GemmBatch);
        Assert.False(GpuKernelOptions.FromHip(Options(), _ => null).TiledWeights);
        Assert.Equal(0, o.MmaSplit);
        Assert.Equal(2, GpuKernelOptions.FromCuda(Options(("mma_split", "2")), _ => null).MmaSplit);
        Assert.Equal(1, GpuKernelOptions.FromCuda(Options(("mma_split", "2")), k => k == "PLUGINENGINE_CUDA_MMA_SPLIT" ? "1" : null).MmaSplit);
        Assert.Contains("mma_split", Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("mma_split", "9")), _ => null)).Message);
        Assert.Contains("PLUGINENGINE_CUDA_MMA_SPLIT", Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_MMA_SPLIT" ? "-1" : null)).Message);
        Assert.False(o.BatchInvariant);
        Assert.True(GpuKernelOptions.FromCuda(Options(("batch_invariant", "on")), _ => null).BatchInvariant);
        Assert.True(GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_BATCH_INVARIANT" ? "on" : null).BatchInvariant);
        // HIP has no int8 mma kernels: never on there, whatever the record's default.
        Assert.False(GpuKernelOptions.FromHip(Options(), _ => null).IntegerMma);
    }

    [Fact]
    public void Plugins_json_selects_and_the_environment_overrides()
    {
        var fromJson = GpuKernelOptions.FromCuda(Options(("matvec", "f32"), ("gemm", "Kernels"), ("graphs", "off")), _ => null);
        Assert.Equal(new GpuKernelOptions(false, false, false), fromJson);
        var env = new Dictionary<string, string> { ["PLUGINENGINE_CUDA_MATVEC"] = "int8", ["PLUGINENGINE_CUDA_GEMM"] = "cublas", ["PLUGINENGINE_CUDA_GRAPHS"] = "off" };
        var overridden = GpuKernelOptions.FromCuda(Options(("matvec", "f32"), ("gemm", "kernels"), ("graphs", "on")), k => env.GetValueOrDefault(k));
        Assert.Equal(GpuKernelOptions.Default, overridden);
    }

    [Fact]
    public void Every_plugins_json_key_counts_as_read_when_the_environment_overrides_it()
    {
        // The host reports keys a plugin never read as unknown options; a key the environment overrides is still known.
        var options = Options(("matvec", "f32"), ("gemm", "kernels"), ("graphs", "on"), ("fusion", "off"), ("pdl", "off"),
                              ("defines", "MATVEC_UNROLL=4"), ("attention_chunk", "256"), ("mma", "off"), ("mma_max_tokens", "8"), ("batch_invariant", "on"));
        var env = new Dictionary<string, string>
        {
            ["PLUGINENGINE_CUDA_MATVEC"] = "int8", ["PLUGINENGINE_CUDA_GEMM"] = "cublas", ["PLUGINENGINE_CUDA_GRAPHS"] = "off",
            ["PLUGINENGINE_CUDA_FUSION"] = "on", ["PLUGINENGINE_CUDA_PDL"] = "on", ["PLUGINENGINE_CUDA_DEFINES"] = "MATVEC_UNROLL=8",
            ["PLUGINENGINE_CUDA_ATTENTION_CHUNK"] = "64", ["PLUGINENGINE_CUDA_MMA"] = "on", ["PLUGINENGINE_CUDA_MMA_MAX_TOKENS"] = "16",
        };
        var o = GpuKernelOptions.FromCuda(options, k => env.GetValueOrDefault(k));
        Assert.Equal(64, o.AttentionChunk);
        Assert.Empty(options.UnreadKeys());
    }

    [Fact]
    public void A_bad_value_names_where_it_came_from()
    {
        var e = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("matvec", "int4")), _ => null));
        Assert.Contains("$.plugins[1].options.matvec", e.Message);
        Assert.Contains("'int4'", e.Message);
        e = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_GEMM" ? "tensor" : null));
        Assert.Contains("environment variable PLUGINENGINE_CUDA_GEMM", e.Message);
    }

    [Fact]
    public void Int8_and_prompt_launches_cover_their_work()
    {
        Assert.Equal(new Launch(1, 1, 256), LaunchGeometry.QuantizeX(8));        // 8 warps, one per 32-element block
        Assert.Equal(new Launch(2, 1, 256), LaunchGeometry.QuantizeX(9));
        Assert.Equal(new Launch(1024, 1, 128), LaunchGeometry.MatVecQ8(4096, 1)); // a warp per row, as the F32 mat-vec
        Assert.Equal(new Launch(1025, 3, 128), LaunchGeometry.MatVecQ8(4097, 3));
        Assert.Equal(new Launch(2, 4096, 128), LaunchGeometry.Dequantize(4096, 4096));     // a thread per 16 elements, two blocks a row
        Assert.Equal(new Launch(6, 11008, 128), LaunchGeometry.Dequantize(11008, 11008));  // 688 groups: six blocks a row
        Assert.Equal(new Launch(1, 3, 128), LaunchGeometry.Dequantize(3, 97));             // partial last group
        Assert.Equal(new Launch(2, 65535, 128), LaunchGeometry.Dequantize(128256, 4096));  // rows past 65,535 in grid-y strides
        Assert.False(LaunchGeometry.UsesBlas(LaunchGeometry.BlasMinTokens - 1));
        Assert.True(LaunchGeometry.UsesBlas(LaunchGeometry.BlasMinTokens));
    }

    [Fact]
    public void Every_int8_and_dequantize_type_has_a_kernel_name_and_whole_32_element_blocks()
    {
        var names = KernelSource.KernelNames().ToHashSet();
        foreach (var t in KernelSource.Int8MatVecTypes)
        {
            Assert.Contains($"matvec_q8_{KernelSource.WeightSuffix(t)}", names);
            Assert.Equal(0, GgmlTypes.Get(t).BlockSize % 32); // quantize_x_q8 makes 32-element blocks; rows must be whole ones
        }
        foreach (var t in KernelSource.DequantizeF16Types) Assert.Contains($"dequantize_f16_{KernelSource.WeightSuffix(t)}", names);
        Assert.Contains("quantize_x_q8", names);
    }

    [Fact]
    public void Kernel_tuning_defines_are_normalized_and_bad_ones_name_where_they_came_from()
    {
        Assert.Equal("", GpuKernelOptions.FromCuda(Options(), _ => null).KernelDefines);
        Assert.Equal("MATVEC_UNROLL=8;MATVEC_MIN_BLOCKS=16",
            GpuKernelOptions.FromCuda(Options(("defines", " MATVEC_UNROLL = 8 ; MATVEC_MIN_BLOCKS=16;")), _ => null).KernelDefines);
        Assert.Equal("SWIGLU_UNROLL=4",
            GpuKernelOptions.FromCuda(Options(("defines", "MATVEC_UNROLL=8")), k => k == "PLUGINENGINE_CUDA_DEFINES" ? "SWIGLU_UNROLL=4" : null).KernelDefines);
        var bad = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("defines", "MATVEC_UNROLL")), _ => null));
        Assert.Contains("$.plugins[1].options.defines", bad.Message);
        Assert.Contains("'MATVEC_UNROLL'", bad.Message);
        Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("defines", "matvec_unroll=8")), _ => null));
        Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("defines", "MATVEC_UNROLL=x")), _ => null));
        Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("defines", "A=1;A=2")), _ => null));
        var host = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_DEFINES" ? "ROW_CHUNK=256" : null));
        Assert.Contains("environment variable PLUGINENGINE_CUDA_DEFINES", host.Message);
        Assert.Contains("ROW_CHUNK", host.Message);
        // A misspelt knob would compile and change nothing: it is refused, with the names the kernels do read.
        var unknown = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("defines", "Q4K_WIDE_LOAD=0")), _ => null));
        Assert.Contains("$.plugins[1].options.defines", unknown.Message);
        Assert.Contains("Q4K_WIDE_LOAD is not a tuning define", unknown.Message);
        Assert.Contains("Q4K_WIDE_LOADS", unknown.Message);
        Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("defines", "PE_DEVICE_WARP=64")), _ => null));
    }

    [Fact]
    public void Tuning_define_names_are_the_kernels_defaults_less_the_hosts()
    {
        var names = KernelSource.TuningDefineNames;
        foreach (string knob in new[] { "MATVEC_UNROLL", "SWIGLU_UNROLL", "MATVEC_MIN_BLOCKS", "MATMUL_T1_UNROLL", "MMQ_PREFETCH",
                                         "PDL_EARLY_TRIGGER", "ATTENTION_PREFETCH_STEPS", "Q4K_WIDE_LOADS", "MMQ_ROWS",
                                         "MATVEC_PRELOAD", "SWIGLU_PRELOAD", "ATTENTION_DECODE_P", "ATTENTION_SPLIT_P", "ATTENTION_H128_BLOCKS",
                                         "KV_BYTE_PERMUTE" })
            Assert.Contains(knob, names);
        foreach (var (host, _) in KernelSource.Defines.Where(d => d.Name != "MMQ_ROWS")) Assert.DoesNotContain(host, names);
        Assert.DoesNotContain(names, n => n.StartsWith("PE_", StringComparison.Ordinal));
    }

    [Fact]
    public void Attention_chunk_is_a_non_negative_position_count()
    {
        Assert.Equal(GpuKernelOptions.DefaultAttentionChunk, GpuKernelOptions.FromCuda(Options(), _ => null).AttentionChunk);
        Assert.Equal(0, GpuKernelOptions.FromCuda(Options(("attention_chunk", "0")), _ => null).AttentionChunk);
        Assert.Equal(16, GpuKernelOptions.FromCuda(Options(("attention_chunk", "0")), k => k == "PLUGINENGINE_CUDA_ATTENTION_CHUNK" ? "16" : null).AttentionChunk);
        Assert.Contains("$.plugins[1].options.attention_chunk", Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(("attention_chunk", "-1")), _ => null)).Message);
        Assert.Contains("PLUGINENGINE_CUDA_ATTENTION_CHUNK", Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_CUDA_ATTENTION_CHUNK" ? "many" : null)).Message);
        Assert.Equal(3, LaunchGeometry.AttentionSplits(700, 256));
        Assert.Equal(2, LaunchGeometry.AttentionSplits(257, 256));
    }
}

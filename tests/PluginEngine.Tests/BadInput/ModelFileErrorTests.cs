using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using Xunit;

namespace PluginEngine.Tests.BadInput;

/// <summary>
/// Issue 18, items 1-5: model files that parse but are wrong end as user errors (exit 2) naming the file and the key or
/// tensor, in <c>run</c> and in <c>inspect --plan</c> alike, and never as an internal error or NaN output.
/// </summary>
public sealed class ModelFileErrorTests(BadInputFixture files) : IClassFixture<BadInputFixture>
{
    private static void AssertUserError((int Code, string Out, string Err) result, string path, params string[] expected)
    {
        Assert.True(result.Code == 2, $"exit {result.Code}: {result.Err}");
        Assert.DoesNotContain("internal error", result.Err);
        Assert.Contains(Path.GetFileName(path), result.Err);
        foreach (string e in expected) Assert.Contains(e, result.Err);
    }

    /// <summary>Runs <c>run</c> and <c>inspect --plan</c> on the file: both must refuse it with the same user error.</summary>
    private void AssertRunAndPlanRefuse(string path, params string[] expected)
    {
        AssertUserError(files.Run("run", "-m", path, "-n", "1", "--no-warmup"), path, expected);
        AssertUserError(files.Run("inspect", path, "--plan"), path, expected);
    }

    // ---- item 1: tokenizer metadata ----

    [Theory]
    [InlineData("no-tokens", "tokenizer.ggml.tokens")]
    [InlineData("bos-outside", "tokenizer.ggml.bos_token_id")]
    [InlineData("eos-outside", "tokenizer.ggml.eos_token_id")]
    [InlineData("scores-count", "tokenizer.ggml.scores")]
    [InlineData("types-count", "tokenizer.ggml.token_type")]
    [InlineData("unknown-model", "tokenizer.ggml.model")]
    [InlineData("gpt2-without-merges", "tokenizer.ggml.merges")]
    [InlineData("add-bos-without-bos", "tokenizer.ggml.add_bos_token")]
    [InlineData("bos-id-uint64-huge", "tokenizer.ggml.bos_token_id")]
    public void Item1_tokenizer_metadata_errors_are_user_errors_naming_file_and_key(string variant, string key)
    {
        string path = files.Variant("tok-" + variant, m =>
        {
            switch (variant)
            {
                case "no-tokens": m.Remove("tokenizer.ggml.tokens"); break;
                case "bos-outside": m["tokenizer.ggml.bos_token_id"] = GgufValue.UInt32(5000); break;
                case "eos-outside": m["tokenizer.ggml.eos_token_id"] = GgufValue.UInt32(384); break;
                case "scores-count": m["tokenizer.ggml.scores"] = GgufValue.Float32Array(new float[10]); break;
                case "types-count": m["tokenizer.ggml.token_type"] = GgufValue.Int32Array(new int[3]); break;
                case "unknown-model": m["tokenizer.ggml.model"] = GgufValue.String("bert"); break;
                case "gpt2-without-merges": m["tokenizer.ggml.model"] = GgufValue.String("gpt2"); m.Remove("tokenizer.ggml.merges"); break;
                case "add-bos-without-bos": m["tokenizer.ggml.bos_token_id"] = GgufValue.UInt32(uint.MaxValue); m["tokenizer.ggml.add_bos_token"] = GgufValue.Bool(true); break;
                case "bos-id-uint64-huge": m["tokenizer.ggml.bos_token_id"] = GgufValue.UInt64((1UL << 63) + 5); break;
            }
        });
        AssertRunAndPlanRefuse(path, key);
    }

    // ---- item 2: wrong metadata types or sizes ----

    [Theory]
    [InlineData("ctx-string", "llama.context_length", "expected a positive integer")]
    [InlineData("eps-integer", "llama.attention.layer_norm_rms_epsilon", "expected a float")]
    [InlineData("blocks-uint64-huge", "llama.block_count", "out of range")]
    [InlineData("heads-array", "llama.attention.head_count", "an array of UInt32")]
    [InlineData("arch-integer", "general.architecture", "not a string")]
    public void Item2_wrong_metadata_types_and_sizes_are_user_errors_naming_the_key(string variant, string key, string detail)
    {
        string path = files.Variant("type-" + variant, m =>
        {
            switch (variant)
            {
                case "ctx-string": m["llama.context_length"] = GgufValue.String("2048"); break;
                case "eps-integer": m["llama.attention.layer_norm_rms_epsilon"] = GgufValue.UInt32(1); break;
                case "blocks-uint64-huge": m["llama.block_count"] = GgufValue.UInt64((1UL << 63) + 5); break;
                case "heads-array": m["llama.attention.head_count"] = GgufValue.UInt32Array([4, 4]); break;
                case "arch-integer": m["general.architecture"] = GgufValue.UInt32(7); break;
            }
        });
        AssertRunAndPlanRefuse(path, key, detail);
    }

    // ---- item 3: hyper-parameters checked before anything is sized by them ----

    [Theory]
    [InlineData("llama.block_count", 300_000_000u, "only")]
    [InlineData("llama.block_count", 0x7FFFFFFFu, "only")]
    [InlineData("llama.block_count", 3u, "holds only 21 tensors")]
    [InlineData("llama.attention.head_count", 3u, "does not divide")]
    [InlineData("llama.attention.head_count_kv", 3u, "must divide")]
    [InlineData("llama.embedding_length", 96u, "token_embd.weight")]
    [InlineData("llama.feed_forward_length", 100_000_000u, "implausibly large")]
    [InlineData("llama.rope.dimension_count", 7u, "must be even")]
    public void Item3_counts_are_checked_against_the_file_before_use(string key, uint value, string detail)
    {
        string path = files.Variant($"count-{key}-{value}", m => m[key] = GgufValue.UInt32(value));
        long before = GC.GetAllocatedBytesForCurrentThread();
        AssertRunAndPlanRefuse(path, key, detail);
        // 300M blocks used to take 2.4 GB before any tensor was checked.
        Assert.InRange(GC.GetAllocatedBytesForCurrentThread() - before, 0, 256L << 20);
    }

    [Fact]
    public void Item3_a_block_count_past_the_last_block_present_names_the_missing_tensor()
    {
        string path = files.Variant("last-block-missing", editTensor: (info, data) => info.Name == "blk.1.attn_norm.weight" ? null : (info, data));
        AssertRunAndPlanRefuse(path, "llama.block_count", "'blk.1.attn_norm.weight' of the last block is missing");
    }

    [Theory]
    [InlineData("llama.attention.layer_norm_rms_epsilon", 0f)]
    [InlineData("llama.attention.layer_norm_rms_epsilon", -1e-5f)]
    [InlineData("llama.attention.layer_norm_rms_epsilon", float.NaN)]
    [InlineData("llama.rope.freq_base", 0f)]
    [InlineData("llama.rope.freq_base", float.NaN)]
    [InlineData("llama.rope.freq_base", float.PositiveInfinity)]
    [InlineData("llama.rope.scaling.factor", 0f)]
    [InlineData("llama.rope.scaling.factor", float.NaN)]
    public void Item3_epsilon_and_rope_parameters_must_be_finite_and_positive(string key, float value)
    {
        string path = files.Variant($"float-{key}-{value}", m =>
        {
            m[key] = GgufValue.Float32(value);
            if (key.Contains("scaling")) m["llama.rope.scaling.type"] = GgufValue.String("linear");
        });
        AssertRunAndPlanRefuse(path, key, "must be finite and positive");
    }

    [Fact]
    public void Item3_an_unsupported_rope_scaling_type_is_named()
    {
        string path = files.Variant("rope-yarn", m => m["llama.rope.scaling.type"] = GgufValue.String("yarn"));
        AssertRunAndPlanRefuse(path, "llama.rope.scaling.type", "'yarn' is not supported");
    }

    // ---- item 4: non-finite weights and outputs ----

    private string NaNWeights(string name, string tensor) => files.Variant(name, editTensor: (info, data) =>
    {
        if (info.Name == tensor) MemoryMarshal.Cast<byte, float>(data.AsSpan()).Fill(float.NaN);
        return (info, data);
    });

    [Fact]
    public void Item4_NaN_weights_make_run_and_logits_fail_with_a_clear_error_never_exit_0()
    {
        string path = NaNWeights("nan-output-norm", "output_norm.weight");
        var run = files.Run("run", "-m", path, "-n", "2", "--no-warmup");
        AssertUserError(run, "", "non-finite logits", "--check-tensors");
        var logits = files.Run("logits", "-m", path, "--tokens", "1,2,3");
        AssertUserError(logits, "", "non-finite logits", "NaN");
        Assert.DoesNotContain("NaN", logits.Out);
    }

    [Fact]
    public void Item4_check_tensors_names_the_tensor_element_and_bytes()
    {
        string path = NaNWeights("nan-attn-norm", "blk.1.attn_norm.weight");
        AssertUserError(files.Run("run", "-m", path, "-n", "1", "--check-tensors"), path, "blk.1.attn_norm.weight: element 0 is NaN", "bytes");
        AssertUserError(files.Run("inspect", path, "--plan", "--check-tensors"), path, "blk.1.attn_norm.weight");
        Assert.Equal(0, files.Run("run", "-m", files.Model, "-n", "1", "--check-tensors").Code);
    }

    [Fact]
    public void Item4_a_matrix_of_a_type_no_kernel_multiplies_is_refused_by_name()
    {
        string path = files.Variant("q-as-i32", editTensor: (info, data) => info.Name == "blk.0.attn_q.weight"
            ? (new TensorInfo(info.Name, GgmlType.I32, [.. info.Dims]), new byte[info.ElementCount * 4])
            : (info, data));
        AssertRunAndPlanRefuse(path, "blk.0.attn_q.weight", "type I32 cannot be used as a weight matrix");
    }

    // ---- item 5: inspect --plan validates like a load ----

    [Theory]
    [InlineData("missing", "blk.1.ffn_down.weight", "tensor missing")]
    [InlineData("shape", "blk.0.ffn_up.weight", "but the model's metadata needs")]
    [InlineData("norm-type", "output_norm.weight", "must be F32")]
    public void Item5_inspect_plan_rejects_what_run_rejects(string variant, string tensor, string detail)
    {
        string path = files.Variant("plan-" + variant, editTensor: (info, data) =>
        {
            if (info.Name != tensor) return (info, data);
            return variant switch
            {
                "missing" => null,
                "shape" => (new TensorInfo(info.Name, info.Type, [info.Dims[0], info.Dims[1] / 2]), data[..(data.Length / 2)]),
                _ => (new TensorInfo(info.Name, GgmlType.F16, [.. info.Dims]), data[..(data.Length / 2)]),
            };
        });
        AssertRunAndPlanRefuse(path, tensor, detail);
    }

    [Fact]
    public void Item5_the_good_model_passes_both()
    {
        Assert.Equal(0, files.Run("inspect", files.Model, "--plan").Code);
        var run = files.Run("run", "-m", files.Model, "-n", "2", "--temp", "0");
        Assert.True(run.Code == 0, run.Err);
    }

    // ---- item 6: inspect stays proportional on huge metadata ----

    [Fact]
    public void Item6_inspect_summarises_many_keys_and_lists_them_with_all()
    {
        string path = files.Variant("many-keys", m =>
        {
            for (int i = 0; i < 5000; i++) m[$"test.key{i:D5}"] = GgufValue.UInt32((uint)i);
            m["test.big_array"] = GgufValue.Int32Array(new int[200_000]);
        });
        var (code, output, _) = files.Run("inspect", path);
        Assert.Equal(0, code);
        Assert.Contains("first 200 shown", output);
        Assert.Contains("more keys (--all lists them)", output);
        Assert.DoesNotContain("test.key04999", output);
        Assert.True(output.Length < 200_000, $"{output.Length} characters");
        var all = files.Run("inspect", path, "--all");
        Assert.Equal(0, all.Code);
        Assert.Contains("test.key04999", all.Out);
        Assert.Contains("Int32 × 200000", all.Out);
    }

    // ---- item 7: directories ----

    [Fact]
    public void Item7_a_directory_as_the_model_says_so()
    {
        var (code, _, err) = files.Run("run", "-m", files.Directory);
        Assert.Equal(2, code);
        Assert.Equal($"error: {files.Directory} is a directory, not a model file; give the .gguf file inside it", err.Trim());
        Assert.Contains("is a directory", files.Run("inspect", files.Directory).Err);
    }
}

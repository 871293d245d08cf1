using PluginEngine.Core.Models;
using PluginEngine.Host;
using PluginEngine.Tests.Plugins;
using Xunit;

namespace PluginEngine.Tests.CliCommands;

/// <summary>run, logits and inspect end to end through the real CLI and the real CPU plugin, on a small generated model.</summary>
public sealed class ModelCommandsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pe-cli-").FullName;
    private readonly string _model;
    private readonly string _plugins;

    public ModelCommandsTests()
    {
        _model = Path.Combine(_dir, "tiny.gguf");
        SyntheticModel.Write(new SyntheticModelSpec { VocabularySize = 512, EmbeddingLength = 128, BlockCount = 2, HeadCount = 4, KvHeadCount = 2, FeedForwardLength = 256, ContextLength = 64 }, _model);
        _plugins = Path.Combine(PluginTestFiles.RepoRoot, "plugins.json");
    }

    public void Dispose() => Directory.Delete(_dir, true);

    private (int Code, string Out, string Err) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = PluginEngine.Host.Cli.Run(["--plugins", _plugins, .. args], output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public void Run_streams_text_and_prints_timings_and_greedy_is_deterministic()
    {
        var a = Run("run", "-m", _model, "-p", "the time", "-n", "8", "--temp", "0", "-t", "1");
        Assert.True(a.Code == 0, a.Err);
        Assert.StartsWith("the time", a.Out);
        Assert.Contains("prompt eval time", a.Err);
        Assert.Contains("eval time", a.Err);
        Assert.Contains("RANDOM", a.Err);
        var b = Run("run", "-m", _model, "-p", "the time", "-n", "8", "--temp", "0", "-t", "1");
        Assert.Equal(a.Out, b.Out);
    }

    [Fact]
    public void Seeded_sampling_is_reproducible()
    {
        var a = Run("run", "-m", _model, "-p", "a", "-n", "12", "--seed", "7", "--temp", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0");
        var b = Run("run", "-m", _model, "-p", "a", "-n", "12", "--seed", "7", "--temp", "1.5", "--top-k", "0", "--top-p", "1", "--min-p", "0");
        Assert.Equal(0, a.Code);
        Assert.Equal(a.Out, b.Out);
    }

    [Theory]
    [InlineData("run --hugepages --no-mmap", "--no-mmap")]
    [InlineData("run -n 100 -c 16", "context size")]
    [InlineData("run --gpu-host-import sometimes", "auto, on or off")]
    [InlineData("run --host-import sometimes", "--host-import: unknown value 'sometimes' (expected auto, on or off)")]
    [InlineData("run --host-import on --no-gpu-host-import", "contradict")]
    [InlineData("run --backend nosuch", "nosuch")]
    [InlineData("logits --tokens 1,x", "not an integer")]
    [InlineData("logits --tokens 1,99999", "outside the vocabulary")]
    [InlineData("run --kv-type q5_0", "--kv-type q5_0: expected f16, f32, q8_0 or q4_0")]
    [InlineData("chat -p hi --cache-type bf16", "--kv-type bf16: expected f16, f32, q8_0 or q4_0")]
    [InlineData("logits --tokens 1,2 -ctk q4_1", "--kv-type q4_1: expected f16, f32, q8_0 or q4_0")]
    [InlineData("run --kv-type q8_0 --kv-f32", "--kv-f32 and --kv-type q8_0 contradict each other")]
    [InlineData("serve --port 0 --kv-type q3_k", "--kv-type q3_k: expected f16, f32, q8_0 or q4_0")]
    public void Bad_requests_are_one_clear_line_and_exit_2(string command, string expected)
    {
        var (code, _, err) = Run([.. command.Split(' '), "-m", _model]);
        Assert.Equal(2, code);
        Assert.Contains(expected, err);
    }

    [Theory]
    [InlineData("--kv-type", "q8_0", "q8_0")]
    [InlineData("-ctk", "q4_0", "q4_0")]
    [InlineData("--cache-type", "F16", "f16")]
    [InlineData("--kv-f32", null, "f32")]
    public void Run_takes_the_kv_cache_type_under_each_name_and_reports_it(string flag, string? value, string reported)
    {
        string[] kv = value is null ? [flag] : [flag, value];
        var r = Run(["run", "-m", _model, "-p", "the time", "-n", "4", "--temp", "0", "-t", "1", .. kv]);
        Assert.True(r.Code == 0, r.Err);
        Assert.StartsWith("the time", r.Out);
        Assert.Contains($"KV cache: {reported}, ", r.Err);
        Assert.Contains("on cpu (2 layers)", r.Err);
    }

    [Fact]
    public void A_quantized_cache_on_a_model_with_heads_of_16_is_refused_with_the_reason()
    {
        string small = Path.Combine(_dir, "heads16.gguf");
        SyntheticModel.Write(new SyntheticModelSpec { VocabularySize = 512, EmbeddingLength = 64, BlockCount = 1, HeadCount = 4, KvHeadCount = 2, FeedForwardLength = 128, ContextLength = 64 }, small);
        var (code, _, err) = Run("run", "-m", small, "-p", "a", "-n", "2", "--kv-type", "q8_0");
        Assert.Equal(2, code);
        Assert.Contains("KV cache type q8_0 needs a head size that is a multiple of 32", err);
        Assert.Contains("head size is 16", err);
        var f16 = Run("run", "-m", small, "-p", "a", "-n", "2", "-t", "1");
        Assert.True(f16.Code == 0, f16.Err);
    }

    [Fact]
    public void Logits_with_a_quantized_cache_stay_near_the_f16_cache_logits()
    {
        string f16 = Path.Combine(_dir, "f16.bin"), q8 = Path.Combine(_dir, "q8.bin");
        foreach (var (file, type) in new[] { (f16, "f16"), (q8, "q8_0") })
        {
            var (code, _, err) = Run("logits", "-m", _model, "--tokens", "1,5,9,200,7", "-o", file, "--kv-type", type, "-t", "1");
            Assert.True(code == 0, err);
        }
        float[] a = ReadFloats(f16), b = ReadFloats(q8);
        double scale = a.Max(MathF.Abs), error = a.Zip(b, (x, y) => Math.Abs(x - y)).Max();
        Assert.InRange(error / scale, 1e-9, 0.05); // moved by the quantization, a little
    }

    private static float[] ReadFloats(string file) => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(File.ReadAllBytes(file)).ToArray();

    [Fact]
    public void The_host_import_flag_is_also_accepted_under_its_older_names()
    {
        // Which values mean what is HostImportSetting.Parse's (HostImportPolicyTests); this checks the aliases reach it.
        var now = Run("inspect", _model, "--plan", "--all", "--host-import", "off");
        var older = Run("inspect", _model, "--plan", "--all", "--gpu-host-import", "0");
        var negated = Run("inspect", _model, "--plan", "--all", "--no-gpu-host-import");
        foreach (var r in new[] { now, older, negated }) Assert.True(r.Code == 0, r.Err);
        Assert.Equal(now.Out, older.Out);
        Assert.Equal(now.Out, negated.Out);
    }

    [Fact]
    public void Missing_or_malformed_model_files_are_user_errors()
    {
        Assert.Equal(2, Run("run", "-m", Path.Combine(_dir, "nope.gguf")).Code);
        string bad = Path.Combine(_dir, "bad.gguf");
        File.WriteAllBytes(bad, "GGUF\x03\0\0\0garbage"u8.ToArray());
        var (code, _, err) = Run("inspect", bad);
        Assert.Equal(2, code);
        Assert.Contains("bad.gguf", err);
    }

    [Fact]
    public void Logits_writes_float32_and_prints_the_top_tokens()
    {
        string file = Path.Combine(_dir, "logits.bin");
        var (code, output, err) = Run("logits", "-m", _model, "--tokens", "1,5,9", "-o", file, "--top", "3", "--all-positions");
        Assert.True(code == 0, err);
        Assert.Equal(3 * 512 * sizeof(float), new FileInfo(file).Length);
        Assert.Equal(3, output.Trim().Split('\n').Length);
    }

    [Fact]
    public void Inspect_shows_tensors_and_the_plan()
    {
        var (code, output, err) = Run("inspect", _model, "--plan", "--all");
        Assert.True(code == 0, err);
        Assert.Contains("blk.0.attn_q.weight", output);
        Assert.Contains("Placement plan", output);
        Assert.Contains("in place", output);
    }
}

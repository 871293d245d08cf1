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
    public void Bad_requests_are_one_clear_line_and_exit_2(string command, string expected)
    {
        var (code, _, err) = Run([.. command.Split(' '), "-m", _model]);
        Assert.Equal(2, code);
        Assert.Contains(expected, err);
    }

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

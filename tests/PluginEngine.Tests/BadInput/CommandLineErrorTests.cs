using PluginEngine.Core.Models;
using PluginEngine.Host.Commands;
using PluginEngine.Tests.Plugins;
using Xunit;

namespace PluginEngine.Tests.BadInput;

/// <summary>
/// Issue 18, items 7-12: configuration that used to be silently wrong, messages in a user's words, progress on long
/// first-run work, and the small CLI gaps (-f, inspect --all / -m, aligned timings, readable logits pieces).
/// Each configuration case is checked with its exact message.
/// </summary>
public sealed class CommandLineErrorTests(BadInputFixture files) : IClassFixture<BadInputFixture>
{
    private string Plugins(string name, string cpuOptions, string? openclOptions = null)
    {
        string cpu = PluginTestFiles.CpuPlugin.Replace("\\", "/");
        string opencl = Path.Combine(PluginTestFiles.RepoRoot, "plugins", "opencl", "PluginEngine.Backends.OpenCL.dll").Replace("\\", "/");
        string extra = openclOptions is null ? "" : $$""", { "name": "opencl", "assembly": "{{opencl}}", "options": {{openclOptions}} }""";
        string preference = openclOptions is null ? "\"cpu\"" : "\"opencl\", \"cpu\"";
        string path = Path.Combine(files.Directory, name + ".json");
        File.WriteAllText(path, $$"""{ "preference": [{{preference}}], "plugins": [ { "name": "cpu", "assembly": "{{cpu}}", "options": {{cpuOptions}} }{{extra}} ] }""");
        return path;
    }

    // ---- item 7: directory as --plugins, JSON error position once ----

    [Fact]
    public void Item7_a_directory_as_plugins_says_so()
    {
        var (code, _, err) = BadInputFixture.Run(files.Directory, "backends");
        Assert.Equal(2, code);
        Assert.Equal($"error: {files.Directory}: $: is a directory, not a file; give the plugins.json inside it", err.Trim());
    }

    [Fact]
    public void Item7_malformed_json_gives_its_position_once_counted_from_one()
    {
        string path = Path.Combine(files.Directory, "malformed.json");
        File.WriteAllText(path, "{\n  \"plugins\": [ ]\n  x\n}");
        var (code, _, err) = BadInputFixture.Run(path, "backends");
        Assert.Equal(2, code);
        Assert.Equal($"error: {path}: $: malformed JSON at line 3, position 3: 'x' is invalid after a value. Expected either ',', '}}', or ']'.", err.Trim());
        Assert.DoesNotContain("LineNumber", err);
    }

    // ---- item 8: plugin options ----

    [Fact]
    public void Item8_a_misspelled_option_of_the_backend_in_use_is_an_error_listing_the_known_keys()
    {
        string plugins = Plugins("typo", """{ "thraeds": 2 }""");
        var (code, _, err) = BadInputFixture.Run(plugins, "run", "-m", files.Model, "-n", "1");
        Assert.Equal(2, code);
        Assert.Equal($"error: {plugins}: $.plugins[0].options.thraeds: unknown option for plugin 'cpu' (it reads: threads)", err.Trim());
    }

    [Fact]
    public void Item8_a_misspelled_option_is_a_warning_in_backends()
    {
        string plugins = Plugins("typo-backends", """{ "threads": 1, "numa": true }""");
        var (code, _, err) = BadInputFixture.Run(plugins, "backends");
        Assert.Equal(0, code);
        Assert.Equal($"warning: {plugins}: $.plugins[0].options.numa: unknown option for plugin 'cpu' (it reads: threads)", err.Trim());
    }

    [Fact]
    public void Item8_a_rejected_preferred_backend_is_a_warning_and_an_explicit_one_exit_2()
    {
        string plugins = Plugins("bad-opencl", """{ "threads": 1 }""", """{ "platform": "first" }""");
        var run = BadInputFixture.Run(plugins, "run", "-m", files.Model, "-n", "1", "--no-warmup");
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains($"warning: plugin 'opencl' ({plugins}) was rejected: probe: $.plugins[1].options.platform: expected an integer, got 'first'", run.Err);

        var inspect = BadInputFixture.Run(plugins, "inspect", files.Model, "--plan");
        Assert.Contains("warning: plugin 'opencl'", inspect.Err);

        var explicitBackend = BadInputFixture.Run(plugins, "run", "-m", files.Model, "-n", "1", "--backend", "opencl");
        Assert.Equal(2, explicitBackend.Code);
        Assert.Equal("error: backend 'opencl' is not available (plugin 'opencl' rejected: probe: $.plugins[1].options.platform: expected an integer, got 'first'); available backends: cpu",
            explicitBackend.Err.Trim());
    }

    [Fact]
    public void Item8_options_record_the_keys_a_plugin_read()
    {
        var options = new PluginEngine.Abstractions.PluginOptions(new Dictionary<string, string> { ["threads"] = "2", ["thraeds"] = "2" }, "$.plugins[0].options");
        Assert.Equal(["thraeds", "threads"], options.UnreadKeys());
        options.GetInt32("threads", 0);
        options.GetBoolean("absent", false);
        Assert.Equal(["thraeds"], options.UnreadKeys());
        Assert.Equal(["absent", "threads"], options.KeysRead);
        _ = options.Values; // a plugin that enumerates every option has seen them all
        Assert.Empty(options.UnreadKeys());
    }

    // ---- item 9: messages in a user's words, naming the subcommand's help ----

    [Theory]
    [InlineData("--top-k -1", "error: --top-k -1: top-k must be 0 (off) or positive")]
    [InlineData("--top-p 0", "error: --top-p 0: top-p must be in (0, 1]; 1 turns it off")]
    [InlineData("--min-p 2", "error: --min-p 2: min-p must be in [0, 1]; 0 turns it off")]
    [InlineData("--repeat-penalty 0", "error: --repeat-penalty 0: repeat penalty must be a positive finite number; 1 turns it off")]
    [InlineData("--temp abc", "error: Cannot parse argument 'abc' for option '--temp' as a number.")]
    [InlineData("-n x", "error: Cannot parse argument 'x' for option '--n-predict' as a whole number.")]
    [InlineData("-n -3", "error: --n-predict -3: must be 0 or more")]
    [InlineData("-c -1", "error: --ctx-size -1: must be positive (or 0 for the default)")]
    [InlineData("-b 0", "error: --batch-size 0: must be at least 1")]
    public void Item9_flag_errors_are_in_a_users_words_and_name_the_subcommands_help(string flags, string expected)
    {
        var (code, _, err) = files.Run(["run", "-m", files.Model, .. flags.Split(' ')]);
        Assert.Equal(2, code);
        Assert.Equal($"{expected}\nRun 'pluginengine run --help' for usage.", err.Trim().ReplaceLineEndings("\n"));
        Assert.DoesNotContain("System.", err);
        Assert.DoesNotContain("Parameter", err);
    }

    // ---- item 10: progress on long first-run work ----

    [Fact]
    public void Item10_synthetic_generation_reports_every_tensor_with_bytes_and_time_left()
    {
        var reports = new List<SyntheticModelProgress>();
        string path = Path.Combine(files.Directory, "progress.gguf");
        SyntheticModel.Write(new SyntheticModelSpec { VocabularySize = 320, EmbeddingLength = 64, BlockCount = 2, HeadCount = 4, KvHeadCount = 2, FeedForwardLength = 128 }, path, reports.Add);
        Assert.Equal(21, reports.Count);
        Assert.Equal(Enumerable.Range(1, 21), reports.Select(r => r.TensorsDone));
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.Second.BytesDone > p.First.BytesDone));
        Assert.Equal(reports[^1].Bytes, reports[^1].BytesDone);
        Assert.Equal(TimeSpan.Zero, reports[^1].Remaining);
        Assert.Matches(@"^tensors 21/21, [\d.]+ MiB of [\d.]+ MiB, 0 s left$", reports[^1].ToString());
        long tensorBytes = Core.Gguf.GgufReader.Read(path).Tensors.Sum(t => t.ByteSize);
        Assert.Equal(tensorBytes, reports[^1].Bytes);
    }

    [Fact]
    public void Item10_the_first_step_is_timed_on_its_own_line()
    {
        var (code, _, err) = files.Run("run", "-m", files.Model, "-n", "3", "--temp", "0");
        Assert.True(code == 0, err);
        Assert.Matches(@"warm-up \(1st step\) = +[\d.]+ ms \(one-time costs", err);
        Assert.DoesNotContain("warm-up", files.Run("run", "-m", files.Model, "-n", "3", "--no-warmup").Err);
    }

    // ---- item 12: -f, inspect --all / -m, aligned timings, readable logits ----

    [Fact]
    public void Item12_run_reads_the_prompt_from_a_file()
    {
        string prompt = Path.Combine(files.Directory, "prompt.txt");
        File.WriteAllText(prompt, "the prompt from a file");
        var (code, output, err) = files.Run("run", "-m", files.Model, "-f", prompt, "-n", "2", "--temp", "0");
        Assert.True(code == 0, err);
        Assert.StartsWith("the prompt from a file", output);
        var both = files.Run("run", "-m", files.Model, "-f", prompt, "-p", "x");
        Assert.Equal(2, both.Code);
        Assert.StartsWith("error: give the prompt with -p or -f, not both", both.Err);
        var missing = files.Run("run", "-m", files.Model, "-f", prompt + ".nope");
        Assert.Equal(2, missing.Code);
        Assert.Equal($"error: -f {prompt}.nope: cannot read the prompt file (not found)", missing.Err.Trim());
    }

    [Fact]
    public void Item12_inspect_refuses_a_model_given_twice_and_all_lists_everything_without_plan()
    {
        var twice = files.Run("inspect", files.Model, "-m", files.Model);
        Assert.Equal(2, twice.Code);
        Assert.StartsWith($"error: the model is given twice ('{files.Model}' and -m '{files.Model}'); give it once, as MODEL or with -m", twice.Err);
        var backendWithoutPlan = files.Run("inspect", files.Model, "--backend", "cpu");
        Assert.Equal(2, backendWithoutPlan.Code);
        Assert.Equal("error: --backend takes effect only with --plan (add --plan to see where the tensors would go)\nRun 'pluginengine inspect --help' for usage.",
            backendWithoutPlan.Err.Trim().ReplaceLineEndings("\n"));
        var all = files.Run("inspect", files.Model, "--all");
        Assert.Equal(0, all.Code);
        Assert.DoesNotContain("more tensors", all.Out);
        Assert.Contains("blk.1.ffn_down.weight", all.Out);
    }

    [Fact]
    public void Item12_timing_lines_are_aligned()
    {
        string[] lines = RunCommand_TimingLines();
        Assert.Equal(4, lines.Length);
        Assert.Single(lines.Select(l => l.IndexOf('=')).Distinct());
        Assert.Single(lines.Select(l => l.IndexOf(" ms", StringComparison.Ordinal)).Distinct());
        var withTokens = lines.Where(l => l.Contains("tokens")).ToArray();
        Assert.Single(withTokens.Select(l => l.IndexOf(" tokens (", StringComparison.Ordinal)).Distinct());
    }

    private string[] RunCommand_TimingLines()
    {
        var (code, _, err) = files.Run("run", "-m", files.Model, "-n", "3", "--temp", "0");
        Assert.True(code == 0, err);
        return err.ReplaceLineEndings("\n").Split('\n').Where(l => l.Contains(" time ") || l.StartsWith("warm-up", StringComparison.Ordinal)).ToArray();
    }

    [Fact]
    public void Item12_logits_refuses_a_negative_top()
    {
        var (code, _, err) = files.Run("logits", "-m", files.Model, "--tokens", "1,2", "--top", "-1");
        Assert.Equal(2, code);
        Assert.StartsWith("error: --top -1: must be 0 or more", err);
    }

    [Theory]
    [InlineData(new byte[] { 0x20, 0x74, 0x68, 0x65 }, "\" the\"")]
    [InlineData(new byte[] { 0xC3, 0xA9, 0x74, 0xC3, 0xA9 }, "\"été\"")]
    [InlineData(new byte[] { 0x0A }, "\"\\n\"")]
    [InlineData(new byte[] { 0x22, 0x01 }, "\"\\\"\\u0001\"")]
    [InlineData(new byte[] { 0xE2 }, "<0xE2>")]
    public void Item12_logits_pieces_are_readable(byte[] piece, string expected)
        => Assert.Equal(expected, LogitsCommand.ReadablePiece(piece));
}

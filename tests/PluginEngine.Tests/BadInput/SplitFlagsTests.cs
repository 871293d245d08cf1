using PluginEngine.Tests.Plugins;
using Xunit;

namespace PluginEngine.Tests.BadInput;

/// <summary>
/// The split flags on the command line (issue 19, docs/multi-gpu.md#flags): bad values are refused naming the flag and the
/// value; the plan shows each device's layers, bytes and the transfers per token.
/// </summary>
public sealed class SplitFlagsTests(BadInputFixture files) : IClassFixture<BadInputFixture>
{
    [Theory]
    [InlineData("--tensor-split", "3,x", "error: --tensor-split 3,x: 'x' is not a number (write proportions separated by commas, e.g. 3,1)")]
    [InlineData("--tensor-split", "1,-2", "error: --tensor-split 1,-2: proportion 2 (-2) must be a finite number ≥ 0")]
    [InlineData("--tensor-split", "0", "error: --tensor-split 0: at least one proportion must be above 0")]
    [InlineData("--tensor-split", "1,1", "error: --tensor-split 1,1: 2 proportions for 1 device(s): 0: cpu:0 (")]
    [InlineData("--main-gpu", "1", "error: --main-gpu 1: out of range; 1 device(s): 0: cpu:0 (")]
    [InlineData("--main-gpu", "-1", "error: --main-gpu -1: must be 0 or more")]
    [InlineData("--split-mode", "row", "error: --split-mode row: expected none or layer")]
    public void Bad_split_flags_are_refused_naming_flag_and_value(string flag, string value, string message)
    {
        var (code, _, err) = files.Run("logits", "-m", files.Model, "--tokens", "1,2", flag, value);
        Assert.Equal(2, code);
        Assert.StartsWith(message, err.Trim());
        Assert.Contains("Run 'pluginengine logits --help' for usage.", err);
    }

    [Fact]
    public void The_plan_shows_each_devices_layers_bytes_and_transfers()
    {
        var (code, output, err) = files.Run("inspect", files.Model, "--plan", "--split-mode", "layer", "--main-gpu", "0");
        Assert.True(code == 0, err);
        Assert.Contains("layers 0-1: cpu (", output);
        Assert.Matches(@"device cpu:0 \(.*\): layers 0-1 \+ output \+ embeddings; weights [0-9.,]+ (KiB|MiB|B), KV cache", output);
        Assert.Contains("activation transfers per token: 0 device boundaries × 64 floats = 0 B", output);
    }

    /// <summary>
    /// Two backends as two placement targets (PoCL's OpenCL on this CPU, and the CPU): the 2-layer model split 1:1 puts layer 0
    /// on OpenCL and layer 1, the output and the embeddings on the CPU — the placement of <c>--backend opencl -ngl 1</c> —
    /// so the logits are the same bit for bit, and the copies are counted per device pair.
    /// </summary>
    [Fact]
    public void A_split_over_two_backends_gives_the_logits_of_the_same_placement_by_ngl()
    {
        string cpu = PluginTestFiles.CpuPlugin.Replace("\\", "/");
        string opencl = Path.Combine(PluginTestFiles.RepoRoot, "plugins", "opencl", "PluginEngine.Backends.OpenCL.dll").Replace("\\", "/");
        string plugins = Path.Combine(files.Directory, "opencl-cpu.json");
        File.WriteAllText(plugins, $$"""{ "preference": ["cpu"], "plugins": [ { "name": "cpu", "assembly": "{{cpu}}", "options": { "threads": 1 } }, { "name": "opencl", "assembly": "{{opencl}}" } ] }""");
        var probe = BadInputFixture.Run(plugins, "backends");
        if (!probe.Out.Contains("opencl", StringComparison.Ordinal) || probe.Err.Contains("plugin 'opencl'", StringComparison.Ordinal))
            Assert.Skip($"the OpenCL backend does not load here: {probe.Err.Trim()}");

        string[] logits = ["logits", "-m", files.Model, "--tokens", "1,17,250,3", "--top", "5", "-o"];
        var byNgl = BadInputFixture.Run(plugins, [.. logits, Path.Combine(files.Directory, "ngl.bin"), "--backend", "opencl", "-ngl", "1"]);
        var bySplit = BadInputFixture.Run(plugins, [.. logits, Path.Combine(files.Directory, "split.bin"), "--backend", "opencl,cpu", "--tensor-split", "1,1", "-v"]);
        Assert.True(byNgl.Code == 0, byNgl.Err);
        Assert.True(bySplit.Code == 0, bySplit.Err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(files.Directory, "ngl.bin")), File.ReadAllBytes(Path.Combine(files.Directory, "split.bin")));
        Assert.Equal(byNgl.Out, bySplit.Out);
        Assert.Matches(@"device opencl:[^
]*: layer 0; weights", bySplit.Err);
        Assert.Matches(@"device cpu:0 \([^
]*\): layer 1 \+ output \+ embeddings; weights", bySplit.Err);
        Assert.Contains("activation transfers per token: 2 device boundaries × 64 floats = 512 B", bySplit.Err);
        // One forward pass of 4 tokens: cpu → opencl before layer 0, opencl → cpu after it.
        Assert.Matches(@"device transfers = 2 copies, 2,048 B \(cpu:0→opencl:.+? 1 copies, 1,024 B; opencl:.+?→cpu:0 1 copies, 1,024 B\)", bySplit.Err);
    }

    [Fact]
    public void Split_flags_take_effect_only_with_plan_in_inspect()
    {
        var (code, _, err) = files.Run("inspect", files.Model, "--tensor-split", "1");
        Assert.Equal(2, code);
        Assert.Contains("--tensor-split takes effect only with --plan", err);
    }
}

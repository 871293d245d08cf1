using PluginEngine.Abstractions;
using PluginEngine.Core.Conformance;
using PluginEngine.Core.Models;
using PluginEngine.Host;
using PluginEngine.Tests.Plugins;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Inference;

/// <summary>
/// The model-level checks of <c>pluginengine conformance</c>: a backend running the CPU's kernels (with most ops falling
/// back) passes every one; a backend with one wrong op fails them; the command reports and exits accordingly.
/// </summary>
public sealed class ModelChecksTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Correct_backend_passes_every_check_including_ngl_1_and_both_seed_gaps()
    {
        var cpu = CpuTestBackend.Device;
        var partial = new PartialDevice(cpu, [ComputeOp.GetRows, ComputeOp.MatMul, ComputeOp.RmsNorm, ComputeOp.Add, ComputeOp.SiluMul]);
        var results = new ModelChecks(partial, cpu, _dir.Path).Run([SyntheticWeightType.Q8_0]);
        Assert.Equal(["logits Q8_0 all layers", "logits Q8_0 -ngl 1", "logits Q8_0 split 1:1 over two devices",
                      "seed regression Q8_0, clean gaps, read-only mapping + forced import",
                      "seed regression Q8_0, dirty gaps, read-only mapping + forced import"], results.Select(r => r.Name));
        var split = results[2];
        Assert.Null(split.Passed); // one device: skipped, saying how to get two
        Assert.Equal("partial has 0 device(s); a split needs two (two GPUs, or the plugin option virtual_devices: 2)", split.Detail);
        Assert.All(results.Where(r => r != split), r => Assert.True(r.Passed == true, $"{r.Name}: {r.Detail}"));
    }

    [Fact]
    public void Split_check_runs_the_model_over_two_devices_against_one()
    {
        var cpu = CpuTestBackend.Device;
        HashSet<ComputeOp> all = [.. Enum.GetValues<ComputeOp>()];
        var first = new PartialDevice(cpu, all, index: 0);
        var second = new PartialDevice(cpu, all, index: 1);
        var results = new ModelChecks(first, cpu, _dir.Path) { SplitDevices = [first, second] }.Run([SyntheticWeightType.Q8_0]);
        var split = Assert.Single(results, r => r.Name == "logits Q8_0 split 1:1 over two devices");
        Assert.True(split.Passed == true, split.Detail);
        Assert.Contains("bit for bit equal", split.Detail);
        Assert.Contains("of the one-device logits' rms", split.Detail);
        // Two passes (the prompt, one decode step), each crossing first → second and back (embeddings and output on the second).
        Assert.Contains("transfers: 4 copies", split.Detail);
        Assert.Contains($"partial:{cpu.Description.StableId}/0→partial:{cpu.Description.StableId}/1 2 copies", split.Detail);
    }

    [Fact]
    public void Backend_with_a_wrong_op_fails_the_logit_checks()
    {
        var cpu = CpuTestBackend.Device;
        var broken = new PartialDevice(cpu, [ComputeOp.GetRows, ComputeOp.MatMul, ComputeOp.RmsNorm, ComputeOp.Add, ComputeOp.SiluMul], brokenAdd: true);
        var results = new ModelChecks(broken, cpu, _dir.Path).Run([SyntheticWeightType.Q8_0]);
        var all = Assert.Single(results, r => r.Name == "logits Q8_0 all layers");
        Assert.False(all.Passed, all.Detail);
        Assert.Contains("of the cpu logits' rms", all.Detail);
    }

    [Fact]
    public void Command_checks_a_backend_against_cpu_and_reports_each_check()
    {
        string plugins = _dir.WritePlugins(("cpu", PluginTestFiles.CpuPlugin, """{ "threads": 1 }""", true));
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Cli.Run(["conformance", "--backend", "cpu", "--plugins", plugins, "--types", "q4_0", "--models", Path.Combine(_dir.Path, "models")], output, error);
        Assert.True(code == ExitCodes.Success, error.ToString() + output);
        Assert.Contains("PASS  logits Q4_0 all layers", output.ToString());
        Assert.Contains("PASS  seed regression Q4_0, dirty gaps", output.ToString());
        // The cpu backend's batching check is exact: no near-tie allowance (docs/batching.md#batch-invariance-on-the-cpu).
        Assert.Contains("PASS  batching: 8 concurrent greedy requests equal each alone (cpu): every token equal (exact)", output.ToString());
        Assert.Contains("conformance cpu: 5 passed, 0 failed, 1 skipped", output.ToString());
        Assert.Contains("SKIP  logits Q4_0 split 1:1 over two devices: cpu has 1 device(s); a split needs two", output.ToString());
    }

    [Fact]
    public void Batching_only_with_exact_names_the_exact_check()
    {
        string plugins = _dir.WritePlugins(("cpu", PluginTestFiles.CpuPlugin, """{ "threads": 1 }""", true));
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Cli.Run(["conformance", "--backend", "cpu", "--plugins", plugins, "--batching", "--exact"], output, error);
        Assert.True(code == ExitCodes.Success, error.ToString() + output);
        Assert.Contains("every token equal (exact)", output.ToString());
        Assert.Contains("conformance cpu: 1 passed, 0 failed, 0 skipped", output.ToString());
    }

    [Fact]
    public void Batching_check_on_the_cpu_backend_is_exact()
    {
        var cpu = CpuTestBackend.Device;
        var result = Core.Serving.BatchedGreedyCheck.Run(cpu, cpu, _dir.Path, exact: true);
        Assert.True(result.Passed == true, result.Detail);
        Assert.StartsWith("every token equal (exact);", result.Detail);
    }

    [Theory]
    [InlineData("--types q9_9", "--types: 'q9_9' is not a weight type")]
    [InlineData("", "Option '--backend' is required")]
    public void Command_bad_input_is_a_user_error(string args, string message)
    {
        string plugins = _dir.WritePlugins(("cpu", PluginTestFiles.CpuPlugin, null, true));
        var error = new StringWriter();
        string[] extra = args.Length == 0 ? [] : ["--backend", "cpu", .. args.Split(' ')];
        int code = Cli.Run(["conformance", "--plugins", plugins, .. extra], new StringWriter(), error);
        Assert.Equal(ExitCodes.UserError, code);
        Assert.Contains(message, error.ToString());
    }

    [Fact]
    public void Command_without_a_cpu_backend_says_it_needs_one()
    {
        string plugins = _dir.WritePlugins(("fake", PluginTestFiles.FakeDevice, null, true));
        var error = new StringWriter();
        int code = Cli.Run(["conformance", "--backend", "fake", "--plugins", plugins], new StringWriter(), error);
        Assert.Equal(ExitCodes.UserError, code);
        Assert.Contains("conformance compares with the cpu backend, which is not loaded", error.ToString());
    }
}

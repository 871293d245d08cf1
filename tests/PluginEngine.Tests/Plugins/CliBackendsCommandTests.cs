using System.Text.Json;
using PluginEngine.Host;
using Xunit;

namespace PluginEngine.Tests.Plugins;

public sealed class CliBackendsCommandTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static (int ExitCode, string Out, string Err) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Cli.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    private string MixedConfig() => _dir.WritePlugins(
        ("cpu", PluginTestFiles.CpuPlugin, null, true),
        ("absent", PluginTestFiles.ProbeSaysNo, null, true),
        ("wrong-api", PluginTestFiles.WrongApiVersion, null, true),
        ("off", PluginTestFiles.FakeDevice, null, false));

    [Fact]
    public void Backends_table_lists_loaded_and_rejected_plugins_with_reasons_and_devices()
    {
        var (code, output, error) = Run("backends", "--plugins", MixedConfig());

        Assert.Equal(ExitCodes.Success, code); // rejected plugins are shown, not failures
        Assert.Equal("", error);
        string[] lines = output.Split('\n');
        Assert.Contains(lines, l => l.Contains("cpu") && l.Contains("loaded") && l.Contains("PluginEngine.Backends.Cpu.dll"));
        Assert.Contains(lines, l => l.Contains("absent") && l.Contains("rejected") && l.Contains("probe: fake device not present"));
        Assert.Contains(lines, l => l.Contains("wrong-api") && l.Contains("rejected") && l.Contains("plugin API version 999.0 is newer"));
        Assert.Contains(lines, l => l.Contains("off") && l.Contains("disabled"));
        Assert.Contains(lines, l => l.Contains("cpu:0") && l.Contains("Cpu") && l.Contains("HostImport")); // device row
        Assert.Contains("Default backend: cpu", output);
    }

    [Fact]
    public void Backends_json_has_every_candidate_and_the_devices_of_loaded_ones()
    {
        var (code, output, _) = Run("backends", "--json", "--plugins", MixedConfig());

        Assert.Equal(ExitCodes.Success, code);
        using var json = JsonDocument.Parse(output);
        var candidates = json.RootElement.GetProperty("candidates").EnumerateArray().ToDictionary(c => c.GetProperty("name").GetString()!);
        Assert.Equal(["cpu", "absent", "wrong-api", "off"], candidates.Keys);
        Assert.Equal("loaded", candidates["cpu"].GetProperty("state").GetString());
        var device = Assert.Single(candidates["cpu"].GetProperty("devices").EnumerateArray());
        Assert.Equal("cpu:0", device.GetProperty("stableId").GetString());
        Assert.Contains("HostImport", device.GetProperty("capabilities").EnumerateArray().Select(c => c.GetString()));
        Assert.True(device.GetProperty("totalMemory").GetInt64() > 0);
        Assert.Equal("rejected", candidates["absent"].GetProperty("state").GetString());
        Assert.Equal("probe: fake device not present", candidates["absent"].GetProperty("reason").GetString());
        Assert.Equal(0, candidates["absent"].GetProperty("score").GetInt32());
        Assert.Equal(999, candidates["wrong-api"].GetProperty("apiVersion").GetInt32());
        Assert.Equal("disabled", candidates["off"].GetProperty("state").GetString());
        Assert.Equal("cpu", json.RootElement.GetProperty("defaultBackend").GetString());
    }

    [Fact]
    public void Invalid_plugins_json_prints_one_line_naming_the_json_path_and_exits_2()
    {
        string path = _dir.Write("plugins.json", """{ "plugins": [ { "name": "cpu", "assembly": "a.dll", "enabled": "yes" } ] }""");

        var (code, output, error) = Run("backends", "--plugins", path);

        Assert.Equal(ExitCodes.UserError, code);
        Assert.Equal("", output);
        string line = Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: ", line);
        Assert.Contains(path, line);
        Assert.Contains("$.plugins[0].enabled", line);
    }

    [Fact]
    public void Verbose_adds_the_stack_trace_and_the_plugin_log()
    {
        string bad = _dir.Write("bad.json", "{ not json");
        var (code, _, error) = Run("backends", "-v", "--plugins", bad);
        Assert.Equal(ExitCodes.UserError, code);
        Assert.Contains("malformed JSON at line 1", error);
        Assert.Contains("PluginConfigException", error); // the exception with its stack, only with -v

        var (okCode, _, log) = Run("backends", "-v", "--plugins", MixedConfig());
        Assert.Equal(ExitCodes.Success, okCode);
        Assert.Contains("Plugin 'absent' rejected: probe: fake device not present", log);
        Assert.Contains("Plugin 'cpu' loaded", log);
    }

    [Fact]
    public void Missing_plugins_file_and_usage_errors_exit_2()
    {
        var (code, _, error) = Run("backends", "--plugins", Path.Combine(_dir.Path, "absent.json"));
        Assert.Equal(ExitCodes.UserError, code);
        Assert.Contains("file not found", error);

        var (usageCode, _, usageError) = Run("no-such-command");
        Assert.Equal(ExitCodes.UserError, usageCode);
        Assert.Contains("no-such-command", usageError);
    }
}

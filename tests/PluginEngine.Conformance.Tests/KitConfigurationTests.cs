using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Conformance.Tests;

/// <summary>Which plugin list and which entries the kit runs against (what plugins/README.md §6 promises).</summary>
public sealed class KitConfigurationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pe-kit-config-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string entries)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, $$"""{ "plugins": [ {{entries}} ] }""");
        return path;
    }

    [Fact]
    public void Named_plugin_list_wins_over_the_one_above_the_binary()
    {
        string named = Write("named.json", """{ "name": "cpu", "assembly": "plugins/cpu/PluginEngine.Backends.Cpu.dll" }, { "name": "mine", "assembly": "mine.dll" }""");
        var config = ConformanceBackends.LocateConfiguration(named, AppContext.BaseDirectory);
        Assert.Equal(named, config.FilePath);
        Assert.Equal(PluginConfigSource.EnvironmentVariable, config.Source);
        Assert.Equal(["cpu", "mine"], config.Plugins.Select(p => p.Name));
    }

    [Fact]
    public void Without_a_name_the_first_plugins_json_above_the_binary_is_used()
    {
        string nested = Directory.CreateDirectory(Path.Combine(_dir, "bin", "Debug")).FullName;
        string above = Path.Combine(_dir, PluginConfiguration.FileName);
        File.WriteAllText(above, """{ "plugins": [ { "name": "cpu", "assembly": "cpu.dll" } ] }""");
        Assert.Equal(above, ConformanceBackends.LocateConfiguration(null, nested).FilePath);
    }

    [Fact]
    public void Missing_named_file_is_an_error_naming_it_and_the_variable()
    {
        string missing = Path.Combine(_dir, "nope.json");
        var e = Assert.Throws<InvalidOperationException>(() => ConformanceBackends.LocateConfiguration(missing, AppContext.BaseDirectory));
        Assert.Contains(missing, e.Message);
        Assert.Contains(PluginConfiguration.EnvironmentVariable, e.Message);
    }

    [Fact]
    public void Backends_variable_restricts_the_candidates()
    {
        string? before = Environment.GetEnvironmentVariable(ConformanceBackends.BackendsVariable);
        try
        {
            Environment.SetEnvironmentVariable(ConformanceBackends.BackendsVariable, "opencl");
            Assert.Equal(["opencl"], ConformanceBackends.Candidates.Select(row => (string)((ITheoryDataRow)row).GetData()[0]!));
            Environment.SetEnvironmentVariable(ConformanceBackends.BackendsVariable, "no-such-entry");
            Assert.Empty(ConformanceBackends.Candidates);
        }
        finally
        {
            Environment.SetEnvironmentVariable(ConformanceBackends.BackendsVariable, before);
        }
    }
}

using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Tests.Plugins;

public sealed class PluginConfigurationTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private string FilePath => Path.Combine(_dir.Path, "plugins.json");

    private PluginConfigException ParseFails(string json)
        => Assert.Throws<PluginConfigException>(() => PluginConfiguration.Parse(json, FilePath));

    [Fact]
    public void Valid_file_is_parsed_with_defaults_resolved_paths_and_scalar_options()
    {
        var config = PluginConfiguration.Parse("""
            {
              "$comment": "documentation keys are allowed",
              "preference": ["cuda", "cpu"],
              "plugins": [
                { "name": "cpu", "assembly": "plugins/cpu/PluginEngine.Backends.Cpu.dll", "options": { "threads": 4, "pin": true, "mode": "auto", "ratio": 1.5 } },
                { "name": "cuda", "assembly": "../elsewhere/Cuda.dll", "enabled": false }
              ]
            }
            """, FilePath);

        Assert.Equal(["cuda", "cpu"], config.Preference);
        Assert.Equal(2, config.Plugins.Count);
        var cpu = config.Plugins[0];
        Assert.Equal("cpu", cpu.Name);
        Assert.True(cpu.Enabled);
        Assert.Equal(Path.Combine(_dir.Path, "plugins", "cpu", "PluginEngine.Backends.Cpu.dll"), cpu.AssemblyPath);
        Assert.Equal("4", cpu.Options.Values["threads"]);
        Assert.Equal("true", cpu.Options.Values["pin"]);
        Assert.Equal("auto", cpu.Options.Values["mode"]);
        Assert.Equal("1.5", cpu.Options.Values["ratio"]);
        Assert.Equal("$.plugins[0].options", cpu.Options.JsonPath);
        Assert.Equal(4, cpu.Options.GetInt32("threads", 0));
        var cuda = config.Plugins[1];
        Assert.False(cuda.Enabled);
        Assert.Equal(Path.GetFullPath(Path.Combine(_dir.Path, "..", "elsewhere", "Cuda.dll")), cuda.AssemblyPath);
        Assert.Empty(cuda.Options.Values);
    }

    [Fact]
    public void Malformed_json_reports_file_line_and_position()
    {
        var e = ParseFails("{\n  \"plugins\": [\n    { \"name\": \"cpu\" \"assembly\": \"x.dll\" }\n  ]\n}");
        Assert.Equal(FilePath, e.FilePath);
        Assert.Contains("malformed JSON at line 3", e.Message);
        Assert.Contains("position", e.Message);
        Assert.StartsWith(FilePath, e.Message);
    }

    [Theory]
    [InlineData("""{ "plugins": [ { "name": "cpu", "assembly": "a.dll", "enabled": "yes" } ] }""", "$.plugins[0].enabled", "expected true or false, found string \"yes\"")]
    [InlineData("""{ "plugins": [ { "name": 7, "assembly": "a.dll" } ] }""", "$.plugins[0].name", "found number 7")]
    [InlineData("""{ "plugins": [ { "name": "cpu", "assembly": ["a.dll"] } ] }""", "$.plugins[0].assembly", "found an array of 1 items")]
    [InlineData("""{ "plugins": [ { "name": "cpu", "assembly": "a.dll", "options": { "threads": { "n": 1 } } } ] }""", "$.plugins[0].options.threads", "expected a string, number or boolean, found an object")]
    [InlineData("""{ "plugins": [ { "name": "cpu", "assembly": "a.dll", "options": [1] } ] }""", "$.plugins[0].options", "expected an object of scalar options")]
    [InlineData("""{ "plugins": { "cpu": "a.dll" } }""", "$.plugins", "expected an array of plugin entries, found an object")]
    [InlineData("""{ "plugins": [ "a.dll" ] }""", "$.plugins[0]", "expected a plugin object")]
    [InlineData("""{ "plugins": [], "preference": ["cpu", 3] }""", "$.preference[1]", "found number 3")]
    [InlineData("""[ { "name": "cpu" } ]""", "$", "expected an object with a 'plugins' array")]
    [InlineData("""{ "plugins": [ { "name": "CPU", "assembly": "a.dll" } ] }""", "$.plugins[0].name", "expected a lowercase id")]
    public void Wrong_types_name_the_json_path_what_was_expected_and_what_was_found(string json, string jsonPath, string message)
    {
        var e = ParseFails(json);
        var error = Assert.Single(e.Errors);
        Assert.Equal(jsonPath, error.JsonPath);
        Assert.Contains(message, error.Message);
        Assert.Equal(FilePath, error.FilePath);
        Assert.Contains(jsonPath, e.Message);
    }

    [Theory]
    [InlineData("""{ "plugins": [ { "name": "a", "assembly": "a.dll" }, { "name": "b", "assembly": "b.dll", "enabeld": false } ] }""", "$.plugins[1].enabeld")]
    [InlineData("""{ "plugins": [], "preferences": ["cpu"] }""", "$.preferences")]
    public void Unknown_properties_are_errors(string json, string jsonPath)
    {
        var error = Assert.Single(ParseFails(json).Errors);
        Assert.Equal(jsonPath, error.JsonPath);
        Assert.Contains("unknown property", error.Message);
    }

    [Fact]
    public void Duplicate_plugin_names_are_errors()
    {
        var error = Assert.Single(ParseFails("""
            { "plugins": [ { "name": "cpu", "assembly": "a.dll" }, { "name": "cpu", "assembly": "b.dll" } ] }
            """).Errors);
        Assert.Equal("$.plugins[1].name", error.JsonPath);
        Assert.Contains("duplicate plugin name 'cpu'", error.Message);
        Assert.Contains("$.plugins[0]", error.Message);
    }

    [Fact]
    public void Duplicate_keys_in_one_object_are_errors()
    {
        var error = Assert.Single(ParseFails("""{ "plugins": [ { "name": "a", "assembly": "a.dll", "enabled": true, "enabled": false } ] }""").Errors);
        Assert.Equal("$.plugins[0].enabled", error.JsonPath);
        Assert.Contains("more than once", error.Message);
    }

    [Theory]
    [InlineData("""{ "plugins": [ { "assembly": "a.dll" } ] }""", "$.plugins[0].name")]
    [InlineData("""{ "plugins": [ { "name": "cpu" } ] }""", "$.plugins[0].assembly")]
    [InlineData("""{ "preference": ["cpu"] }""", "$.plugins")]
    public void Missing_required_fields_are_errors(string json, string jsonPath)
    {
        var error = Assert.Single(ParseFails(json).Errors);
        Assert.Equal(jsonPath, error.JsonPath);
        Assert.Contains("required property is missing", error.Message);
    }

    [Fact]
    public void Every_error_is_reported_not_just_the_first()
    {
        var e = ParseFails("""
            { "plugins": [ { "name": "a", "assembly": "a.dll", "enabled": 1 }, { "name": "b" }, { "name": "c", "assembly": "c.dll", "colour": "red" } ] }
            """);
        Assert.Equal(["$.plugins[0].enabled", "$.plugins[1].assembly", "$.plugins[2].colour"], e.Errors.Select(x => x.JsonPath));
        Assert.Contains("3 errors", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Loading_a_missing_file_names_it()
    {
        string missing = Path.Combine(_dir.Path, "nope.json");
        var e = Assert.Throws<PluginConfigException>(() => PluginConfiguration.Load(missing));
        Assert.Equal(missing, e.FilePath);
        Assert.Contains("file not found", e.Message);
    }

    [Fact]
    public void Built_in_default_lists_only_the_cpu_plugin()
    {
        var config = PluginConfiguration.CreateDefault(_dir.Path);
        Assert.Equal(PluginConfigSource.BuiltInDefault, config.Source);
        var cpu = Assert.Single(config.Plugins);
        Assert.Equal("cpu", cpu.Name);
        Assert.Equal(Path.Combine(_dir.Path, "plugins", "cpu", "PluginEngine.Backends.Cpu.dll"), cpu.AssemblyPath);
        Assert.Equal(["cpu"], config.Preference);
    }
}

public sealed class PluginConfigLocatorTests : IDisposable
{
    private const string OneEntry = """{ "plugins": [ { "name": "NAME", "assembly": "a.dll" } ] }""";
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private string WriteConfig(string relativePath, string entryName) => _dir.Write(relativePath, OneEntry.Replace("NAME", entryName));

    [Fact]
    public void Command_line_beats_environment_and_current_directory()
    {
        string option = WriteConfig("option/plugins.json", "from-option");
        string env = WriteConfig("env/plugins.json", "from-env");
        WriteConfig("cwd/plugins.json", "from-cwd");
        var config = PluginConfigLocator.Locate(option, env, Path.Combine(_dir.Path, "cwd"), Path.Combine(_dir.Path, "host"));
        Assert.Equal(PluginConfigSource.CommandLine, config.Source);
        Assert.Equal("from-option", config.Plugins[0].Name);
    }

    [Fact]
    public void Environment_variable_beats_current_directory()
    {
        string env = WriteConfig("env/plugins.json", "from-env");
        WriteConfig("cwd/plugins.json", "from-cwd");
        var config = PluginConfigLocator.Locate(null, env, Path.Combine(_dir.Path, "cwd"), Path.Combine(_dir.Path, "host"));
        Assert.Equal(PluginConfigSource.EnvironmentVariable, config.Source);
        Assert.Equal("from-env", config.Plugins[0].Name);
    }

    [Fact]
    public void Current_directory_beats_the_host_directory()
    {
        WriteConfig("cwd/plugins.json", "from-cwd");
        WriteConfig("repo/plugins.json", "from-repo");
        Directory.CreateDirectory(Path.Combine(_dir.Path, "repo", "host", "bin"));
        var config = PluginConfigLocator.Locate(null, null, Path.Combine(_dir.Path, "cwd"), Path.Combine(_dir.Path, "repo", "host", "bin"));
        Assert.Equal(PluginConfigSource.CurrentDirectory, config.Source);
        Assert.Equal("from-cwd", config.Plugins[0].Name);
    }

    [Fact]
    public void Host_directory_search_walks_up_to_the_repository_root()
    {
        string repoConfig = WriteConfig("repo/plugins.json", "from-repo");
        string hostBin = Path.Combine(_dir.Path, "repo", "host", "bin", "Debug", "net10.0");
        Directory.CreateDirectory(hostBin);
        Directory.CreateDirectory(Path.Combine(_dir.Path, "cwd"));
        var config = PluginConfigLocator.Locate(null, null, Path.Combine(_dir.Path, "cwd"), hostBin);
        Assert.Equal(PluginConfigSource.HostDirectory, config.Source);
        Assert.Equal(repoConfig, config.FilePath);
    }

    [Fact]
    public void Without_any_file_the_built_in_default_is_used()
    {
        // The temp folder lives outside any checkout, so nothing above it has a plugins.json... unless /tmp itself does.
        Assert.SkipWhen(PluginConfigLocator.FindUpwards(_dir.Path, PluginConfiguration.FileName) is not null, "a plugins.json exists above the temp folder");
        Directory.CreateDirectory(Path.Combine(_dir.Path, "cwd"));
        Directory.CreateDirectory(Path.Combine(_dir.Path, "host"));
        var config = PluginConfigLocator.Locate(null, null, Path.Combine(_dir.Path, "cwd"), Path.Combine(_dir.Path, "host"));
        Assert.Equal(PluginConfigSource.BuiltInDefault, config.Source);
        Assert.Equal("cpu", Assert.Single(config.Plugins).Name);
    }

    [Fact]
    public void A_named_file_that_does_not_exist_is_an_error_not_a_fallback()
    {
        WriteConfig("cwd/plugins.json", "from-cwd");
        string cwd = Path.Combine(_dir.Path, "cwd");
        var fromOption = Assert.Throws<PluginConfigException>(() => PluginConfigLocator.Locate("missing.json", null, cwd, cwd));
        Assert.Equal(Path.Combine(cwd, "missing.json"), fromOption.FilePath);
        var fromEnv = Assert.Throws<PluginConfigException>(() => PluginConfigLocator.Locate(null, "gone.json", cwd, cwd));
        Assert.Contains(PluginConfiguration.EnvironmentVariable, fromEnv.Message);
    }
}

using System.Text;
using System.Text.Json;

namespace PluginEngine.Tests.Plugins;

/// <summary>Paths of the deployed CPU and test plugins, found from the test binary's folder.</summary>
internal static class PluginTestFiles
{
    /// <summary>The repository root (the folder holding PluginEngine.sln).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>The CPU plugin as the build deploys it.</summary>
    public static string CpuPlugin => Path.Combine(RepoRoot, "plugins", "cpu", "PluginEngine.Backends.Cpu.dll");

    public static string FakeDevice => TestPlugin("fake-device", "FakeDevicePlugin");
    public static string WrongApiVersion => TestPlugin("wrong-api-version", "WrongApiVersionPlugin");
    public static string OlderMajor => TestPlugin("older-major", "OlderMajorPlugin");
    public static string NewerMinor => TestPlugin("newer-minor", "NewerMinorPlugin");
    public static string ProbeSaysNo => TestPlugin("probe-says-no", "ProbeSaysNoPlugin");
    public static string ProbeThrows => TestPlugin("probe-throws", "ProbeThrowsPlugin");
    public static string Incompatible => TestPlugin("incompatible", "IncompatiblePlugin");

    private static string TestPlugin(string folder, string project)
    {
        string path = Path.Combine(RepoRoot, "tests", "TestPlugins", "bin-deploy", folder, $"PluginEngine.TestPlugins.{project}.dll");
        // Fail loudly (not as a confusing rejection) if the test project stopped building the plugins.
        if (!File.Exists(path)) throw new FileNotFoundException($"test plugin not deployed: {path} (does PluginEngine.Tests still reference {project}.csproj?)");
        return path;
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PluginEngine.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no PluginEngine.sln above {AppContext.BaseDirectory}");
    }
}

/// <summary>A temporary folder for plugins.json files, deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pluginengine-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    /// <summary>Writes <paramref name="text"/> to <paramref name="name"/> in this folder and returns its full path.</summary>
    public string Write(string name, string text)
    {
        string file = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(file)!);
        File.WriteAllText(file, text);
        return file;
    }

    /// <summary>Writes a plugins.json listing (name, assembly, options JSON or null, enabled) entries.</summary>
    public string WritePlugins(params (string Name, string Assembly, string? OptionsJson, bool Enabled)[] entries)
        => WritePlugins(null, entries);

    /// <summary>Same, with a preference list.</summary>
    public string WritePlugins(string[]? preference, params (string Name, string Assembly, string? OptionsJson, bool Enabled)[] entries)
    {
        var json = new StringBuilder("{\n");
        if (preference is not null) json.Append("  \"preference\": ").Append(JsonSerializer.Serialize(preference)).Append(",\n");
        json.Append("  \"plugins\": [\n");
        for (int i = 0; i < entries.Length; i++)
        {
            var (name, assembly, options, enabled) = entries[i];
            json.Append("    { \"name\": ").Append(JsonSerializer.Serialize(name))
                .Append(", \"assembly\": ").Append(JsonSerializer.Serialize(assembly))
                .Append(", \"enabled\": ").Append(enabled ? "true" : "false");
            if (options is not null) json.Append(", \"options\": ").Append(options);
            json.Append(i == entries.Length - 1 ? " }\n" : " },\n");
        }
        json.Append("  ]\n}\n");
        return Write("plugins.json", json.ToString());
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { } // best effort: a leftover temp folder must not fail a test
    }
}

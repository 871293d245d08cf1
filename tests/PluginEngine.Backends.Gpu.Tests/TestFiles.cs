using System.Text;
using System.Text.Json;

namespace PluginEngine.Backends.Gpu.Tests;

/// <summary>Where the build deploys the GPU plugins, found from the test binary's folder.</summary>
internal static class TestFiles
{
    /// <summary>The repository root (the folder holding PluginEngine.sln).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string CudaPlugin => Path.Combine(RepoRoot, "plugins", "cuda", "PluginEngine.Backends.Cuda.dll");

    public static string HipPlugin => Path.Combine(RepoRoot, "plugins", "hip", "PluginEngine.Backends.Hip.dll");

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PluginEngine.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no PluginEngine.sln above {AppContext.BaseDirectory}");
    }
}

/// <summary>A temporary folder, deleted on dispose.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "pluginengine-gpu-tests-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    /// <summary>Writes a plugins.json with one entry (name, assembly, options JSON) and returns its path.</summary>
    public string WritePlugin(string name, string assembly, string optionsJson)
    {
        string json = "{ \"plugins\": [ { \"name\": " + JsonSerializer.Serialize(name) + ", \"assembly\": " + JsonSerializer.Serialize(assembly) +
                      ", \"enabled\": true, \"options\": " + optionsJson + " } ] }";
        string file = System.IO.Path.Combine(Path, "plugins.json");
        File.WriteAllText(file, json, Encoding.UTF8);
        return file;
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { } // best effort
    }
}

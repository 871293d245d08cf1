using System.Text.Json;
using Xunit;

namespace PluginEngine.Tests.Plugins;

/// <summary>
/// build/Plugin.targets deploys only a plugin's own files: its assembly, .pdb, .deps.json and .runtimeconfig.json,
/// and the private dependencies its .deps.json names (runtime assemblies by file name, with their .pdb, native files by
/// their runtimes/ path). The host's copies (the contracts, the core) never land in a plugin's folder.
/// </summary>
public sealed class PluginDeploymentTests
{
    public static TheoryData<string> DeployedPlugins()
    {
        var data = new TheoryData<string>();
        foreach (string root in new[] { Path.Combine(PluginTestFiles.RepoRoot, "plugins"), Path.Combine(PluginTestFiles.RepoRoot, "tests", "TestPlugins", "bin-deploy") })
        {
            if (!Directory.Exists(root)) continue;
            foreach (string folder in Directory.GetDirectories(root).Order(StringComparer.Ordinal))
                if (Directory.GetFiles(folder, "*.deps.json").Length > 0) data.Add(Path.GetRelativePath(PluginTestFiles.RepoRoot, folder));
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(DeployedPlugins))]
    public void A_deployed_plugin_folder_holds_only_the_plugins_own_files(string folder)
    {
        string directory = Path.Combine(PluginTestFiles.RepoRoot, folder);
        string depsFile = Assert.Single(Directory.GetFiles(directory, "*.deps.json"));
        string assembly = Path.GetFileName(depsFile)[..^".deps.json".Length];
        var allowed = new HashSet<string>(StringComparer.Ordinal)
        {
            assembly + ".dll", assembly + ".pdb", assembly + ".deps.json", assembly + ".runtimeconfig.json",
        };
        using (var deps = JsonDocument.Parse(File.ReadAllText(depsFile)))
        {
            foreach (var target in deps.RootElement.GetProperty("targets").EnumerateObject())
            foreach (var library in target.Value.EnumerateObject())
            {
                if (library.Value.TryGetProperty("runtime", out var runtime))
                    foreach (var asset in runtime.EnumerateObject())
                    {
                        allowed.Add(Path.GetFileName(asset.Name));
                        // A private project dependency comes with its symbols (the CUDA and HIP plugins' shared GPU assembly).
                        allowed.Add(Path.ChangeExtension(Path.GetFileName(asset.Name), ".pdb"));
                    }
                if (library.Value.TryGetProperty("runtimeTargets", out var native))
                    foreach (var asset in native.EnumerateObject()) allowed.Add(asset.Name);
            }
        }

        var foreign = Directory.GetFiles(directory, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(directory, f).Replace('\\', '/'))
            .Where(f => !allowed.Contains(f))
            .Order(StringComparer.Ordinal)
            .ToArray();
        Assert.True(foreign.Length == 0, $"{folder} holds files that are not the plugin's own (rebuild to clean it): {string.Join(", ", foreign)}");
        Assert.DoesNotContain("PluginEngine.Abstractions.dll", allowed);
    }
}

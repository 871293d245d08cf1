using System.Text.Json;
using System.Xml.Linq;
using PluginEngine.Abstractions;
using PluginEngine.Tests.Plugins;
using Xunit;

namespace PluginEngine.Tests.Packaging;

/// <summary>The packages are versioned together: what the template references is what build/Packaging.props packs.</summary>
public sealed class TemplateVersionTests
{
    private static string Root => PluginTestFiles.RepoRoot;

    [Fact]
    public void Template_references_the_packed_version()
    {
        string version = XDocument.Load(Path.Combine(Root, "build", "Packaging.props")).Descendants("PluginEngineVersion").Single().Value;
        using var template = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "templates", "content", "backend", ".template.config", "template.json")));
        Assert.Equal(version, template.RootElement.GetProperty("symbols").GetProperty("pluginEngineVersion").GetProperty("defaultValue").GetString());
        foreach (string project in new[] { "MyBackend/MyBackend.csproj", "MyBackend.Tests/MyBackend.Tests.csproj" })
            Assert.Contains("Version=\"PLUGINENGINE_VERSION\"", File.ReadAllText(Path.Combine(Root, "templates", "content", "backend", project)));
    }

    [Fact]
    public void Template_backend_speaks_the_current_api()
    {
        string plugin = File.ReadAllText(Path.Combine(Root, "templates", "content", "backend", "MyBackend", "MyBackendPlugin.cs"));
        Assert.Contains("public int ApiVersion => PluginApi.Major;", plugin);
        Assert.Contains("public int ApiMinorVersion => PluginApi.Minor;", plugin);
        Assert.Equal(1, PluginApi.Major);
    }
}

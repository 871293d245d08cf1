using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Conformance;

/// <summary>OpenCL-specific plugin behaviour: option validation and probe reasons, through the real plugin host.</summary>
public sealed class OpenCLPluginTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pe-opencl-plugin-").FullName;

    private PluginCandidate LoadOpenCL(string optionsJson)
    {
        string repoConfig = PluginConfigLocator.FindUpwards(AppContext.BaseDirectory, PluginConfiguration.FileName)!;
        string assembly = Path.Combine(Path.GetDirectoryName(repoConfig)!, "plugins", "opencl", "PluginEngine.Backends.OpenCL.dll");
        string path = Path.Combine(_dir, PluginConfiguration.FileName);
        File.WriteAllText(path, $$"""
            { "plugins": [ { "name": "opencl", "assembly": "{{assembly.Replace("\\", "/")}}", "enabled": true, "options": {{optionsJson}} } ] }
            """);
        return PluginHost.Load(PluginConfiguration.Load(path)).Candidates.Single();
    }

    /// <summary>The default selection either loads or is rejected with one of the documented reasons, never a crash.</summary>
    [Fact]
    public void Probe_loads_or_names_what_is_missing()
    {
        var candidate = LoadOpenCL("{}");
        if (candidate.State == PluginState.Loaded)
        {
            var d = Assert.Single(candidate.Devices).Description;
            Assert.Equal("opencl", d.Backend);
            Assert.True(d.Has(Abstractions.BackendCapabilities.HostImport | Abstractions.BackendCapabilities.Async | Abstractions.BackendCapabilities.OwnedBuffers));
            Assert.True(d.StableId.StartsWith("pci:", StringComparison.Ordinal) || d.StableId.StartsWith("opencl:", StringComparison.Ordinal), d.StableId);
        }
        else
        {
            Assert.Equal(PluginState.Rejected, candidate.State);
            Assert.Matches("libOpenCL.so.1 not found|no OpenCL platform|no device", candidate.Reason);
        }
    }

    [Theory]
    [InlineData("""{ "platform": 99 }""", "platform: index 99 is out of range")]
    [InlineData("""{ "device": 99 }""", "device: index 99 is out of range")]
    [InlineData("""{ "platform": "first" }""", "platform: expected an integer")]
    public void Bad_platform_or_device_option_is_a_rejection_naming_the_option(string options, string expected)
    {
        var candidate = LoadOpenCL(options);
        if (candidate.State == PluginState.Rejected && !candidate.Reason.Contains("options", StringComparison.Ordinal)
            && candidate.Reason is var r && (r.Contains("not found") || r.Contains("no OpenCL platform") || r.StartsWith("no device")))
            Assert.Skip($"OpenCL is not available here: {r}");
        Assert.Equal(PluginState.Rejected, candidate.State);
        Assert.Contains(expected, candidate.Reason);
        Assert.Contains("$.plugins[0].options", candidate.Reason);
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

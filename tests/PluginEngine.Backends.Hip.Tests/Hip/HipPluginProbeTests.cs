using PluginEngine.Abstractions;
using PluginEngine.Backends.Hip.Native;
using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Hip;

/// <summary>
/// The HIP plugin as the host loads it from plugins/hip. Here (CI, the development machine) there is no AMD GPU: with
/// Debian's ROCm runtime installed the probe must say so in the runtime's own words (hipInit's error); without it, that
/// the library is missing. The device tests skip with that reason; on a machine with an AMD GPU they run.
/// </summary>
public sealed class HipPluginProbeTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string HipPluginPath => TestFiles.HipPlugin;

    private PluginCandidate Probe(string optionsJson = """{ "device": 0 }""")
        => Assert.Single(PluginHost.Load(PluginConfiguration.Load(_dir.WritePlugin("hip", HipPluginPath, optionsJson))).Candidates);

    [Fact]
    public void Plugin_is_deployed_with_the_build_beside_the_shared_gpu_assembly()
    {
        Assert.True(File.Exists(HipPluginPath), $"{HipPluginPath} missing: does the host still reference the HIP plugin project?");
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(HipPluginPath)!, "PluginEngine.Backends.Gpu.dll")), "the shared GPU assembly is not deployed beside the HIP plugin");
        Assert.False(File.Exists(Path.Combine(Path.GetDirectoryName(HipPluginPath)!, "PluginEngine.Abstractions.dll")), "the contracts must come from the host");
    }

    [Fact]
    public void Without_an_amd_gpu_the_plugin_loads_and_is_rejected_with_the_runtimes_own_reason()
    {
        var candidate = Probe();
        if (candidate.State == PluginState.Loaded) Assert.Skip($"an AMD GPU is present here: {candidate.Reason}");
        Assert.Equal(PluginState.Rejected, candidate.State);
        Assert.Equal("hip", candidate.Backend);                 // the entry type was created and named its backend
        Assert.Equal(PluginApi.Version, candidate.ApiVersion);  // the API check passed: only the probe said no
        Assert.Empty(candidate.Devices);
        var api = HipApi.TryLoad([], out string? missing);
        if (api is null)
            Assert.StartsWith("probe: libamdhip64.so not found", candidate.Reason);
        else
        {
            // The runtime's own words: hipInit's (or hipGetDeviceCount's) error name, from hipGetErrorName.
            Assert.Matches(@"^probe: no AMD GPU: hip(Init|GetDeviceCount) (failed: hipError\w+ \(\d+\)|found 0 devices)", candidate.Reason);
        }
    }

    [Fact]
    public void A_bad_option_is_a_rejection_naming_the_option_path()
    {
        var candidate = Probe("""{ "device": 0, "readonly_register": "sometimes" }""");
        Assert.Equal(PluginState.Rejected, candidate.State);
        Assert.Contains("$.plugins[0].options.readonly_register: expected 'on' or 'off', got 'sometimes'", candidate.Reason);
    }

    [Fact]
    public void Repository_plugins_json_lists_hip_enabled_after_cuda()
    {
        var config = PluginConfiguration.Load(Path.Combine(TestFiles.RepoRoot, "plugins.json"));
        var entry = Assert.Single(config.Plugins, p => p.Name == "hip");
        Assert.True(entry.Enabled);
        Assert.Equal(Path.GetFullPath(HipPluginPath), Path.GetFullPath(entry.AssemblyPath));
        var order = config.Preference.ToList();
        Assert.True(order.IndexOf("cuda") < order.IndexOf("hip") && order.IndexOf("hip") < order.IndexOf("cpu"));
    }

    /// <summary>A device test: on an AMD GPU the device describes itself; elsewhere it is skipped with the probe's reason.</summary>
    [Fact]
    public void The_device_reports_kind_warp_and_host_import()
    {
        var host = PluginHost.Load(PluginConfiguration.Load(_dir.WritePlugin("hip", HipPluginPath, """{ "device": 0 }""")));
        var candidate = Assert.Single(host.Candidates);
        if (candidate.State != PluginState.Loaded) Assert.Skip($"hip {candidate.Reason}");
        var device = Assert.Single(candidate.Devices).Description;
        Assert.Equal("hip", device.Backend);
        Assert.True(device.Kind is DeviceKind.IntegratedGpu or DeviceKind.DiscreteGpu);
        Assert.Matches(@"wave(32|64)", device.Details);
        Assert.True(device.TotalMemory > 0 && device.FreeMemory > 0 && device.FreeMemory <= device.TotalMemory);
        if (device.Kind == DeviceKind.IntegratedGpu) Assert.True(device.Capabilities.HasFlag(BackendCapabilities.HostImport));
    }
}

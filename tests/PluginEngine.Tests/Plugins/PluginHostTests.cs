using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Tests.Plugins;

public sealed class PluginHostTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private PluginHost LoadHost(params (string Name, string Assembly, string? OptionsJson, bool Enabled)[] entries)
        => PluginHost.Load(PluginConfiguration.Load(_dir.WritePlugins(entries)));

    private PluginCandidate LoadSingle(string assembly, string? optionsJson = null)
        => Assert.Single(LoadHost(("only", assembly, optionsJson, true)).Candidates);

    [Fact]
    public void Cpu_plugin_loads_from_the_deployed_plugins_folder_and_exposes_a_device()
    {
        var host = LoadHost(("cpu", PluginTestFiles.CpuPlugin, """{ "threads": 3 }""", true));

        var candidate = Assert.Single(host.Candidates);
        Assert.Equal(PluginState.Loaded, candidate.State);
        Assert.Equal("cpu", candidate.Backend);
        Assert.Equal(PluginApi.Version, candidate.ApiVersion);
        Assert.True(candidate.Score > 0);
        var backend = host.GetBackend("cpu");
        var device = Assert.Single(backend.Devices);
        Assert.Equal(DeviceKind.Cpu, device.Description.Kind);
        Assert.Equal("cpu", device.Description.Backend);
        Assert.Equal(PluginApi.Minor, candidate.ApiMinorVersion); // first-party plugins speak the host's own minor
        Assert.Equal(PluginApi.Minor, PluginApiVersions.MinorOf(device));
        Assert.Contains("3 threads", device.Description.Details); // the entry's options reached the plugin
        Assert.Same(device, Assert.Single(candidate.Devices));
        // The device came through the shared contracts: its buffers are usable from the host.
        using var buffer = device.Buffers.AllocateOwned("probe", 64);
        buffer.Memset(0, 64, 0x5A);
        Span<byte> read = stackalloc byte[64];
        buffer.Download(0, read);
        Assert.All(read.ToArray(), b => Assert.Equal(0x5A, b));
    }

    [Fact]
    public void Plugin_services_get_the_host_logging_and_their_context()
    {
        var backend = LoadHost(("fake-entry", PluginTestFiles.FakeDevice, null, true)).GetBackend("fake");
        var context = (PluginContext?)backend.Services.GetService(typeof(PluginContext));
        Assert.NotNull(context);
        Assert.Equal("fake-entry", context.PluginName);
        Assert.Equal(Path.GetDirectoryName(PluginTestFiles.FakeDevice), context.PluginDirectory);
        Assert.NotNull(backend.Services.GetService(typeof(Microsoft.Extensions.Logging.ILoggerFactory)));
        Assert.NotNull(backend.Services.GetService(typeof(Microsoft.Extensions.Logging.ILogger<PluginHostTests>)));
    }

    [Fact]
    public void Wrong_api_version_is_rejected_before_probing()
    {
        var c = LoadSingle(PluginTestFiles.WrongApiVersion);
        Assert.Equal(PluginState.Rejected, c.State);
        string host = $"{PluginApi.Major}.{PluginApi.Minor}";
        Assert.Equal($"plugin API version 999.0 is newer than the host's {host}: a different major version is incompatible; use a host (pluginengine) with API 999.x", c.Reason);
        Assert.Equal(999, c.ApiVersion);
        Assert.Null(c.Score); // the probe (which throws) never ran
    }

    [Fact]
    public void Older_major_is_refused_naming_both_versions()
    {
        var c = LoadSingle(PluginTestFiles.OlderMajor);
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.Contains("plugin API version 0.0 is older than the host's " + $"{PluginApi.Major}.{PluginApi.Minor}", c.Reason);
        Assert.Contains("rebuild the plugin against PluginEngine.Abstractions", c.Reason);
        Assert.Equal("0.0", c.ApiVersionText);
        Assert.Null(c.Score);
    }

    [Fact]
    public void Newer_minor_is_refused_naming_both_versions()
    {
        var c = LoadSingle(PluginTestFiles.NewerMinor);
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.Contains($"plugin API version 1.99 is newer than the host's {PluginApi.Major}.{PluginApi.Minor}", c.Reason);
        Assert.Null(c.Score);
    }

    [Fact]
    public void Older_minor_loads_and_is_recorded_for_its_devices()
    {
        // FakeDevicePlugin does not implement ApiMinorVersion: the contracts' default makes it an API 1.0 plugin.
        var c = LoadSingle(PluginTestFiles.FakeDevice);
        Assert.Equal(PluginState.Loaded, c.State);
        Assert.Equal(0, c.ApiMinorVersion);
        Assert.Equal("1.0", c.ApiVersionText);
        Assert.Equal(0, PluginApiVersions.MinorOf(Assert.Single(c.Devices)));
    }

    [Theory]
    [InlineData(1, 0, true)]
    [InlineData(1, 1, true)]
    [InlineData(1, 2, true)]
    [InlineData(1, 3, true)]
    [InlineData(1, 4, false)]
    [InlineData(2, 0, false)]
    [InlineData(0, 9, false)]
    [InlineData(1, -1, false)]
    public void Negotiation_accepts_the_same_major_up_to_the_hosts_minor(int major, int minor, bool accepted)
    {
        Assert.Equal(1, PluginApi.Major); // the cases above are written for host API 1.3
        Assert.Equal(3, PluginApi.Minor);
        string? refusal = PluginHost.Negotiate(major, minor);
        Assert.Equal(accepted, refusal is null);
        if (refusal is not null)
        {
            Assert.Contains($"{major}.{minor}", refusal);
            Assert.Contains("1.3", refusal);
        }
    }

    [Fact]
    public void Probe_saying_no_is_rejected_with_the_probe_reason()
    {
        var c = LoadSingle(PluginTestFiles.ProbeSaysNo);
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.Equal("probe: fake device not present", c.Reason);
        Assert.Equal(0, c.Score);
        Assert.Empty(c.Devices);
    }

    [Fact]
    public void Probe_that_throws_is_rejected_with_the_exception_message()
    {
        var c = LoadSingle(PluginTestFiles.ProbeThrows);
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.Equal("probe threw InvalidOperationException: fake driver exploded during probe", c.Reason);
    }

    [Fact]
    public void Plugin_compiled_against_other_contracts_is_rejected_as_incompatible()
    {
        var c = LoadSingle(PluginTestFiles.Incompatible);
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.StartsWith("incompatible with host contracts: ", c.Reason);
        Assert.Contains("IncompatiblePlugin", c.Reason);
    }

    [Fact]
    public void Missing_assembly_is_rejected_naming_the_path()
    {
        string missing = Path.Combine(_dir.Path, "plugins", "nope", "Nope.dll");
        var c = LoadSingle(missing);
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.Equal($"assembly not found: {missing}", c.Reason);
        Assert.Equal(missing, c.AssemblyPath);
    }

    [Fact]
    public void A_file_that_is_not_an_assembly_is_rejected()
    {
        string garbage = _dir.Write("plugins/garbage/Garbage.dll", "this is not a PE file");
        var c = LoadSingle(garbage);
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.StartsWith("not a loadable .NET assembly: ", c.Reason);
        Assert.Contains(garbage, c.Reason);
    }

    [Fact]
    public void Disabled_entries_are_listed_but_never_loaded()
    {
        // Points at a plugin that would throw if it were loaded and probed.
        var host = LoadHost(("off", PluginTestFiles.ProbeThrows, null, false));
        var c = Assert.Single(host.Candidates);
        Assert.Equal(PluginState.Disabled, c.State);
        Assert.Null(c.ApiVersion);
        Assert.Empty(host.Backends);
    }

    [Fact]
    public void Plugin_that_registers_no_device_is_rejected()
    {
        var c = LoadSingle(PluginTestFiles.FakeDevice, """{ "devices": 0 }""");
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.Contains("zero devices", c.Reason);
    }

    [Fact]
    public void Option_of_the_wrong_type_rejects_the_plugin_naming_the_option_path()
    {
        var c = LoadSingle(PluginTestFiles.FakeDevice, """{ "score": "high" }""");
        Assert.Equal(PluginState.Rejected, c.State);
        Assert.Contains("$.plugins[0].options.score: expected an integer, got 'high'", c.Reason);
    }

    [Fact]
    public void Highest_probe_score_wins_and_the_others_are_outscored()
    {
        var host = LoadHost(
            ("fake-low", PluginTestFiles.FakeDevice, """{ "score": 5 }""", true),
            ("fake-high", PluginTestFiles.FakeDevice, """{ "score": 80, "devices": 2 }""", true),
            ("fake-mid", PluginTestFiles.FakeDevice, """{ "score": 40 }""", true));

        var backend = host.GetBackend("fake");
        Assert.Equal("fake-high", backend.Candidate.Name);
        Assert.Equal(2, backend.Devices.Count);
        Assert.All(backend.Devices, d => Assert.Equal("entry=fake-high", d.Description.Details));
        Assert.Equal(["fake-low", "fake-high", "fake-mid"], host.Candidates.Select(c => c.Name)); // file order kept
        var low = host.Candidates[0];
        Assert.Equal(PluginState.Rejected, low.State);
        Assert.Equal("outscored by 'fake-high' (score 80 > 5) for backend 'fake'", low.Reason);
        Assert.Equal(5, low.Score);
        Assert.Equal(PluginState.Rejected, host.Candidates[2].State);
        Assert.StartsWith("outscored by 'fake-high'", host.Candidates[2].Reason);
    }

    [Fact]
    public void When_the_best_scorer_fails_to_configure_the_next_best_is_used()
    {
        var host = LoadHost(
            ("fake-broken", PluginTestFiles.FakeDevice, """{ "score": 90, "devices": 0 }""", true),
            ("fake-ok", PluginTestFiles.FakeDevice, """{ "score": 20 }""", true));
        Assert.Equal("fake-ok", host.GetBackend("fake").Candidate.Name);
        Assert.Contains("zero devices", host.Candidates[0].Reason);
    }

    [Fact]
    public void Bad_plugins_do_not_stop_good_ones_from_loading()
    {
        var host = LoadHost(
            ("throws", PluginTestFiles.ProbeThrows, null, true),
            ("cpu", PluginTestFiles.CpuPlugin, null, true),
            ("wrong-api", PluginTestFiles.WrongApiVersion, null, true),
            ("incompatible", PluginTestFiles.Incompatible, null, true),
            ("absent", PluginTestFiles.ProbeSaysNo, null, true));
        Assert.Equal(["cpu"], host.Backends.Keys);
        Assert.Equal(4, host.Candidates.Count(c => c.State == PluginState.Rejected));
    }

    [Fact]
    public void Unknown_backend_error_lists_available_backends_and_why_a_tried_one_failed()
    {
        var host = LoadHost(("cpu", PluginTestFiles.CpuPlugin, null, true), ("absent", PluginTestFiles.ProbeSaysNo, null, true));

        var unknown = Assert.Throws<BackendNotAvailableException>(() => host.GetBackend("cuda"));
        Assert.Equal("cuda", unknown.Backend);
        Assert.Contains("available backends: cpu", unknown.Message);
        var rejected = Assert.Throws<BackendNotAvailableException>(() => host.GetBackend("fake"));
        Assert.Contains("fake device not present", rejected.Message);
    }

    [Fact]
    public void Default_backend_follows_the_preference_order()
    {
        var path = _dir.WritePlugins(["cuda", "fake", "cpu"],
            ("cpu", PluginTestFiles.CpuPlugin, null, true), ("fake", PluginTestFiles.FakeDevice, """{ "score": 1 }""", true));
        var host = PluginHost.Load(PluginConfiguration.Load(path));
        Assert.Equal("fake", host.SelectDefault().Name); // cuda is not loaded; fake comes before cpu despite the lower score

        var noPreference = PluginHost.Load(PluginConfiguration.Load(_dir.WritePlugins(
            ("cpu", PluginTestFiles.CpuPlugin, null, true), ("fake", PluginTestFiles.FakeDevice, """{ "score": 1 }""", true))));
        Assert.Equal("cpu", noPreference.SelectDefault().Name); // no preference: highest score
    }

    [Fact]
    public void Selecting_a_default_with_nothing_loaded_explains_every_rejection()
    {
        var host = LoadHost(("absent", PluginTestFiles.ProbeSaysNo, null, true));
        var e = Assert.Throws<BackendNotAvailableException>(() => host.SelectDefault());
        Assert.Contains("no backend could be loaded", e.Message);
        Assert.Contains("'absent': probe: fake device not present", e.Message);
    }
}

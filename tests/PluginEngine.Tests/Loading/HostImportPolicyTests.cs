using PluginEngine.Abstractions;
using PluginEngine.Core.Loading;
using Xunit;

namespace PluginEngine.Tests.Loading;

public sealed class HostImportPolicyTests
{
    private static DeviceDescription Device(DeviceKind kind, BackendCapabilities caps)
        => new("x", "x", kind, "x:0", 1, 1, caps);

    private static HostImportSetting Mode(HostImportMode m) => new(m, "test");

    [Theory]
    [InlineData(DeviceKind.IntegratedGpu, ModelMemoryMode.HugePages, HostImportMode.Auto, true)]
    [InlineData(DeviceKind.IntegratedGpu, ModelMemoryMode.FileMapping, HostImportMode.Auto, false)] // auto follows hugepages
    [InlineData(DeviceKind.DiscreteGpu, ModelMemoryMode.HugePages, HostImportMode.Auto, false)]     // auto: integrated only
    [InlineData(DeviceKind.DiscreteGpu, ModelMemoryMode.FileMapping, HostImportMode.On, true)]      // forced on: allowed, experimental
    [InlineData(DeviceKind.IntegratedGpu, ModelMemoryMode.HugePages, HostImportMode.Off, false)]
    public void Gpu_import_follows_the_policy(DeviceKind kind, ModelMemoryMode memory, HostImportMode mode, bool expected)
    {
        var (import, reason) = HostImportPolicy.Decide(Device(kind, BackendCapabilities.HostImport), memory, Mode(mode));
        Assert.Equal(expected, import);
        Assert.False(string.IsNullOrWhiteSpace(reason));
        if (mode == HostImportMode.On && kind == DeviceKind.DiscreteGpu) Assert.Contains("experimental", reason);
    }

    [Fact]
    public void Devices_without_the_capability_never_import()
    {
        var (import, reason) = HostImportPolicy.Decide(Device(DeviceKind.IntegratedGpu, 0), ModelMemoryMode.HugePages, Mode(HostImportMode.On));
        Assert.False(import);
        Assert.Contains("HostImport", reason);
    }

    [Theory]
    [InlineData(HostImportMode.Off)]
    [InlineData(HostImportMode.Auto)]
    public void Cpu_uses_mapped_weights_in_place_regardless_of_the_switch(HostImportMode mode)
    {
        var (import, reason) = HostImportPolicy.Decide(Device(DeviceKind.Cpu, BackendCapabilities.HostImport | BackendCapabilities.HostMemoryInPlace),
            ModelMemoryMode.FileMapping, Mode(mode));
        Assert.True(import);
        Assert.Contains("independent", reason);
    }

    [Fact]
    public void Flag_wins_over_environment_and_the_conflict_is_reported()
    {
        var s = HostImportSetting.Resolve(HostImportMode.Off, "on");
        Assert.Equal(HostImportMode.Off, s.Mode);
        Assert.Equal("flag", s.Source);
        Assert.Contains(HostImportSetting.EnvironmentVariable, s.Note);

        var env = HostImportSetting.Resolve(null, "on");
        Assert.Equal(HostImportMode.On, env.Mode);
        Assert.Contains("environment", env.Source);
        Assert.Null(env.Note);

        Assert.Equal(HostImportMode.Auto, HostImportSetting.Resolve(null, null).Mode);
        var bad = Assert.Throws<ArgumentException>(() => HostImportSetting.Resolve(null, "maybe"));
        Assert.Contains(HostImportSetting.EnvironmentVariable, bad.Message);
    }

    [Theory]
    [InlineData("auto", HostImportMode.Auto)]
    [InlineData("ON", HostImportMode.On)]
    [InlineData("1", HostImportMode.On)]
    [InlineData("true", HostImportMode.On)]
    [InlineData(" off ", HostImportMode.Off)]
    [InlineData("0", HostImportMode.Off)]
    [InlineData("false", HostImportMode.Off)]
    public void The_flag_and_the_environment_accept_the_same_values(string value, HostImportMode expected)
    {
        Assert.Equal(expected, HostImportSetting.Parse(value, "--host-import"));
        Assert.Equal(expected, HostImportSetting.Resolve(null, value).Mode);
    }

    [Fact]
    public void A_bad_value_names_where_it_came_from_and_what_is_expected()
    {
        var e = Assert.Throws<ArgumentException>(() => HostImportSetting.Parse("sometimes", "--host-import"));
        Assert.Equal("--host-import: unknown value 'sometimes' (expected auto, on or off)", e.Message);
        var legacy = Assert.Throws<ArgumentException>(() => HostImportSetting.Resolve(null, "maybe", HostImportSetting.LegacyEnvironmentVariable));
        Assert.Contains(HostImportSetting.LegacyEnvironmentVariable, legacy.Message);
    }

    [Fact]
    public void The_earlier_environment_variable_is_still_read_and_named_as_the_source()
    {
        var s = HostImportSetting.Resolve(null, "off", HostImportSetting.LegacyEnvironmentVariable);
        Assert.Equal(HostImportMode.Off, s.Mode);
        Assert.Equal($"environment {HostImportSetting.LegacyEnvironmentVariable}", s.Source);
    }

    [Fact]
    public void Hugepages_with_no_mmap_or_off_linux_is_rejected_with_a_reason()
    {
        var e = Assert.Throws<LoadOptionsException>(() => LoadOptions.FromSwitches(useMmap: false, hugePages: true, HostImportSetting.Default, isLinux: true));
        Assert.Contains("--no-mmap", e.Message);
        var l = Assert.Throws<LoadOptionsException>(() => LoadOptions.FromSwitches(useMmap: true, hugePages: true, HostImportSetting.Default, isLinux: false));
        Assert.Contains("Linux", l.Message);
        Assert.Equal(ModelMemoryMode.HugePages, LoadOptions.FromSwitches(true, true, HostImportSetting.Default, true).Memory);
        Assert.Equal(ModelMemoryMode.Heap, LoadOptions.FromSwitches(false, false, HostImportSetting.Default, true).Memory);
        Assert.Equal(ModelMemoryMode.FileMapping, LoadOptions.FromSwitches(true, false, HostImportSetting.Default, true).Memory);
    }
}

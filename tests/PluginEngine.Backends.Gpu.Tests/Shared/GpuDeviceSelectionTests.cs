using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// Which GPUs the CUDA and HIP plugins expose (docs/multi-gpu.md#two-devices-on-one-gpu): every visible GPU by default,
/// <c>device</c> or <c>devices</c> to choose, <c>virtual_devices</c> N for N devices per GPU, each with an environment
/// override; a bad value names where it came from.
/// </summary>
public sealed class GpuDeviceSelectionTests
{
    private static GpuDeviceSelection Read(string backend, Dictionary<string, string> options, Dictionary<string, string>? environment = null)
        => GpuDeviceSelection.Read(new PluginOptions(options, "$.plugins[0].options"), name => environment?.GetValueOrDefault(name), backend);

    [Fact]
    public void Default_is_every_visible_gpu_once()
    {
        var selection = Read("cuda", []);
        Assert.Null(selection.Ordinals);
        Assert.Equal(1, selection.VirtualDevices);
    }

    [Fact]
    public void Device_devices_and_virtual_devices_are_read_and_the_environment_wins()
    {
        Assert.Equal([1], Read("cuda", new() { ["device"] = "1" }).Ordinals);
        Assert.Equal([0, 2], Read("cuda", new() { ["devices"] = "0, 2" }).Ordinals);
        Assert.Null(Read("cuda", new() { ["devices"] = "all" }).Ordinals);
        Assert.Equal(2, Read("cuda", new() { ["virtual_devices"] = "2" }).VirtualDevices);
        var env = Read("hip", new() { ["virtual_devices"] = "2", ["device"] = "0" }, new() { ["PLUGINENGINE_HIP_VIRTUAL_DEVICES"] = "3", ["PLUGINENGINE_HIP_DEVICES"] = "1,0" });
        Assert.Equal(3, env.VirtualDevices);
        Assert.Equal([1, 0], env.Ordinals);
    }

    [Theory]
    [InlineData("device", "first", "$.plugins[0].options.device: expected an integer, got 'first'")]
    [InlineData("device", "-1", "$.plugins[0].options.device: -1 is outside [0, 1023]")]
    [InlineData("devices", "0,0", "$.plugins[0].options.devices: '0,0' names a device twice")]
    [InlineData("devices", "0,x", "$.plugins[0].options.devices: expected an integer, got 'x' (device indices like 0,1, or all)")]
    [InlineData("virtual_devices", "0", "$.plugins[0].options.virtual_devices: expected a number of devices per GPU 1..8, got '0'")]
    [InlineData("virtual_devices", "9", "$.plugins[0].options.virtual_devices: expected a number of devices per GPU 1..8, got '9'")]
    public void A_bad_value_names_the_option(string key, string value, string message)
    {
        var e = Assert.Throws<PluginOptionException>(() => Read("cuda", new() { [key] = value }));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void A_bad_environment_value_names_the_variable()
    {
        var e = Assert.Throws<PluginOptionException>(() => Read("cuda", [], new() { ["PLUGINENGINE_CUDA_VIRTUAL_DEVICES"] = "two" }));
        Assert.Equal("environment variable PLUGINENGINE_CUDA_VIRTUAL_DEVICES: expected a number of devices per GPU 1..8, got 'two'", e.Message);
    }

    [Fact]
    public void Device_and_devices_together_are_refused()
    {
        var e = Assert.Throws<PluginOptionException>(() => Read("cuda", new() { ["device"] = "0", ["devices"] = "1" }));
        Assert.Equal("$.plugins[0].options: give 'device' or 'devices', not both", e.Message);
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Hip;

/// <summary>The HIP plugin's options: the shared ones under PLUGINENGINE_HIP_, and read-only registration (default off).</summary>
public sealed class HipOptionsTests
{
    private static PluginOptions Options(params (string Key, string Value)[] values)
        => new(values.ToDictionary(v => v.Key, v => v.Value), "$.plugins[3].options");

    [Fact]
    public void Defaults_register_read_write_and_use_the_plugin_kernels_without_graphs_or_pdl()
    {
        var o = GpuKernelOptions.FromHip(Options(), _ => null);
        Assert.False(o.ReadOnlyHostRegister);
        Assert.True(o.Int8MatVec);
        Assert.True(o.FusedOps);
        Assert.False(o.BlasPrompt);
        Assert.False(o.Graphs);
        Assert.False(o.ProgrammaticLaunch);
        Assert.Equal(GpuKernelOptions.DefaultAttentionChunk, o.AttentionChunk);
    }

    [Fact]
    public void Read_only_registration_is_an_option_and_the_environment_overrides()
    {
        Assert.True(GpuKernelOptions.FromHip(Options(("readonly_register", "on")), _ => null).ReadOnlyHostRegister);
        Assert.False(GpuKernelOptions.FromHip(Options(("readonly_register", "on")), k => k == "PLUGINENGINE_HIP_READONLY_REGISTER" ? "off" : null).ReadOnlyHostRegister);
        Assert.True(GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_HIP_READONLY_REGISTER" ? "ON" : null).ReadOnlyHostRegister);
        // The CUDA plugin's variables do not reach HIP, and the reverse.
        Assert.True(GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_CUDA_MATVEC" ? "f32" : null).Int8MatVec);
        Assert.False(GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_HIP_MATVEC" ? "f32" : null).Int8MatVec);
        Assert.True(GpuKernelOptions.FromCuda(Options(), k => k == "PLUGINENGINE_HIP_MATVEC" ? "f32" : null).Int8MatVec);
        Assert.False(GpuKernelOptions.FromCuda(Options(), _ => null).ReadOnlyHostRegister); // CUDA decides by the device attribute
    }

    [Fact]
    public void A_bad_value_names_where_it_came_from()
    {
        var e = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromHip(Options(("readonly_register", "yes")), _ => null));
        Assert.Contains("$.plugins[3].options.readonly_register: expected 'on' or 'off', got 'yes'", e.Message);
        e = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_HIP_ATTENTION_CHUNK" ? "-1" : null));
        Assert.Contains("PLUGINENGINE_HIP_ATTENTION_CHUNK", e.Message);
        e = Assert.Throws<PluginOptionException>(() => GpuKernelOptions.FromHip(Options(), k => k == "PLUGINENGINE_HIP_DEFINES" ? "ROW_CHUNK=256" : null));
        Assert.Contains("ROW_CHUNK is set by the host", e.Message);
    }
}

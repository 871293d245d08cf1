using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;

using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Cuda;

/// <summary>The CUDA plugin as the host loads it from plugins/cuda, on a machine without the NVIDIA driver.</summary>
public sealed class CudaPluginProbeTests : IDisposable
{
    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string CudaPluginPath => Path.Combine(TestFiles.RepoRoot, "plugins", "cuda", "PluginEngine.Backends.Cuda.dll");

    private static void SkipWhereTheDriverExists()
    {
        if (NativeLibrary.TryLoad("libcuda.so.1", out nint handle))
        {
            NativeLibrary.Free(handle);
            Assert.Skip("libcuda.so.1 is present here: the rejection path cannot be observed");
        }
    }

    [Fact]
    public void Plugin_is_deployed_with_the_build()
        => Assert.True(File.Exists(CudaPluginPath), $"{CudaPluginPath} missing: does the host still reference the CUDA plugin project?");

    [Fact]
    public void Without_libcuda_the_plugin_loads_but_is_rejected_naming_the_library()
    {
        SkipWhereTheDriverExists();
        var host = PluginHost.Load(PluginConfiguration.Load(_dir.WritePlugin("cuda", CudaPluginPath, """{ "device": 0 }""")));

        var candidate = Assert.Single(host.Candidates);
        Assert.Equal(PluginState.Rejected, candidate.State);
        Assert.Equal("cuda", candidate.Backend);          // the entry type was created and named its backend
        Assert.Equal(PluginApi.Version, candidate.ApiVersion); // the API check passed: only the probe said no
        Assert.Equal(0, candidate.Score);
        Assert.StartsWith("probe: libcuda.so.1 not found", candidate.Reason);
        Assert.Empty(candidate.Devices);
        var e = Assert.Throws<BackendNotAvailableException>(() => host.GetBackend("cuda"));
        Assert.Contains("libcuda.so.1 not found", e.Message);
    }

    [Fact]
    public void Repository_plugins_json_lists_cuda_enabled_and_the_default_falls_back_to_the_cpu()
    {
        SkipWhereTheDriverExists();
        var config = PluginConfiguration.Load(Path.Combine(TestFiles.RepoRoot, "plugins.json"));
        var entry = Assert.Single(config.Plugins, p => p.Name == "cuda");
        Assert.True(entry.Enabled);
        Assert.Equal(Path.GetFullPath(CudaPluginPath), Path.GetFullPath(entry.AssemblyPath));

        var host = PluginHost.Load(config);
        Assert.Equal(PluginState.Rejected, Assert.Single(host.Candidates, c => c.Name == "cuda").State);
        Assert.Equal("cpu", host.SelectDefault().Name);
    }

    [Fact]
    public void A_bad_device_option_is_a_rejection_naming_the_option_path()
    {
        var host = PluginHost.Load(PluginConfiguration.Load(_dir.WritePlugin("cuda", CudaPluginPath, """{ "device": "first" }""")));
        var candidate = Assert.Single(host.Candidates);
        Assert.Equal(PluginState.Rejected, candidate.State);
        Assert.Contains("$.plugins[0].options.device: expected an integer, got 'first'", candidate.Reason);
    }
}

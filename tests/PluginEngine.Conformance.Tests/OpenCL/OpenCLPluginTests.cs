using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Conformance.Tests.OpenCL;

/// <summary>
/// These tests create OpenCL devices of their own (a plugin host per test, building the kernel program each time). PoCL
/// was seen to crash (SIGSEGV in libpocl) when a device is created while another test runs kernels on the shared
/// device, so they run alone, after the parallel collections.
/// </summary>
[CollectionDefinition(nameof(OwnOpenCLDevices), DisableParallelization = true)]
public sealed class OwnOpenCLDevices;

/// <summary>OpenCL-specific plugin behaviour: option validation and probe reasons, through the real plugin host.</summary>
[Collection(nameof(OwnOpenCLDevices))]
public sealed class OpenCLPluginTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pe-opencl-plugin-").FullName;

    private PluginCandidate LoadOpenCL(string optionsJson)
    {
        // OpenCL-specific: only when the plugin list in use configures an OpenCL backend.
        if (!ConformanceBackends.IsConfigured("opencl"))
            Assert.Skip($"no enabled 'opencl' entry in {ConformanceBackends.ConfigurationFile}: the OpenCL plugin tests need it");
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
            Assert.True(d.Has(Abstractions.BackendCapabilities.HostImport));
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
    [InlineData("""{ "kernels": "fast" }""", "kernels: expected auto, cpu or gpu, got 'fast'")]
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

    /// <summary>The OpenCL device with the <c>matmul</c> kernel shape forced; skips when OpenCL is not available here.</summary>
    private IBackendDevice DeviceWithKernelShape(string shape)
    {
        var candidate = LoadOpenCL($$"""{ "kernels": "{{shape}}" }""");
        if (candidate.State != PluginState.Loaded) Assert.Skip($"OpenCL is not available here: {candidate.Reason}");
        var device = Assert.Single(candidate.Devices);
        Assert.Contains($"{shape.ToUpperInvariant()}-shaped matmul and attention kernels", device.Description.Details);
        return device;
    }

    /// <summary>
    /// The GPU-shaped OpenCL matmul decodes quantized rows in whole 512-element chunks, so the last row's chunk runs into
    /// the slide: with the slide left as garbage (0xFF: NaN f16 scales) the last output row is NaN (and, for rows much
    /// shorter than 512, earlier rows whose chunk also reaches it); after InitTensor zeroes the slide every row is finite.
    /// This proves the slide is read (and must be zero). The CPU-shaped kernels stop at each row's end, so the same
    /// garbage leaves every row finite.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.Q4_0, 96, "gpu")]
    [InlineData(GgmlType.Q8_0, 800, "gpu")]
    [InlineData(GgmlType.Q4_K, 768, "gpu")]
    [InlineData(GgmlType.Q6_K, 256, "gpu")]
    [InlineData(GgmlType.Q4_0, 96, "cpu")]
    [InlineData(GgmlType.Q8_0, 800, "cpu")]
    [InlineData(GgmlType.Q4_K, 768, "cpu")]
    [InlineData(GgmlType.Q6_K, 256, "cpu")]
    public void Matmul_slide_is_read_by_the_gpu_shape_and_ignored_by_the_cpu_shape(GgmlType type, int cols, string shape)
    {
        var device = DeviceWithKernelShape(shape);
        const int rows = 5;
        var info = new TensorInfo("w", type, [cols, rows]);
        long alloc = device.Buffers.GetAllocSize(info);
        Assert.Equal(TensorPadding.SlideBytes(info, 512), alloc - info.ByteSize);
        Assert.True(alloc > info.ByteSize, "a row length that is not a multiple of 512 must declare a slide");
        byte[] weights = TestData.Matrix(type, 3, rows, cols);
        float[] x = TestData.Random(4, cols);

        float[] Run(bool initTensor)
        {
            using var session = new DeviceSession(device);
            using var buffer = device.Buffers.AllocateOwned("poisoned", alloc);
            buffer.Memset(0, alloc, 0xFF);
            if (initTensor) buffer.InitTensor(info, 0, alloc);
            buffer.Upload(0, weights);
            var y = session.Zeros(rows);
            session.Queue.MatMul(new DeviceTensor(buffer, 0, type), rows, cols, session.Floats(x), y, 1);
            return session.Read(y, rows);
        }

        float[] poisoned = Run(initTensor: false);
        if (shape == "gpu")
            Assert.True(float.IsNaN(poisoned[^1]), $"last row with a 0xFF slide gave {poisoned[^1]}, expected NaN: the kernel no longer reads the slide (then GetAllocSize should declare none)");
        else
            Assert.All(poisoned, v => Assert.True(float.IsFinite(v), $"the CPU-shaped kernel read past a row: {v}"));
        float[] zeroed = Run(initTensor: true);
        Assert.All(zeroed, v => Assert.True(float.IsFinite(v)));
        if (shape == "cpu") Assert.Equal(zeroed, poisoned); // the slide's bytes make no difference at all
    }

    /// <summary>
    /// The CPU-shaped matmul kernels (the default on CPU devices such as PoCL) against the GPU-shaped ones on the same
    /// device and data, at the edges of the CPU kernels' tiling: a row count that is not a multiple of the 2-row group,
    /// token counts of 1 (mat-vec), a partial 4-token tile and several tiles, and (F32/F16/BF16) a row length that is
    /// not a multiple of 32, which takes the element-by-element tail.
    /// </summary>
    [Theory]
    [InlineData(GgmlType.F32, 100)]
    [InlineData(GgmlType.F16, 100)]
    [InlineData(GgmlType.BF16, 100)]
    [InlineData(GgmlType.F32, 64)]
    [InlineData(GgmlType.Q8_0, 64)]
    [InlineData(GgmlType.Q4_0, 544)]
    [InlineData(GgmlType.Q4_K, 256)]
    [InlineData(GgmlType.Q5_K, 512)]
    [InlineData(GgmlType.Q6_K, 768)]
    public void Cpu_and_gpu_shaped_matmuls_agree(GgmlType type, int cols)
    {
        var cpuShaped = DeviceWithKernelShape("cpu");
        var gpuShaped = DeviceWithKernelShape("gpu");
        const int rows = 7;
        var info = new TensorInfo("w", type, [cols, rows]);
        byte[] weights = TestData.Matrix(type, 11, rows, cols);
        foreach (int tokens in new[] { 1, 3, 6 })
        {
            float[] x = TestData.Random(12 + tokens, (long)tokens * cols);
            float[] Run(IBackendDevice device)
            {
                using var session = new DeviceSession(device);
                var (w, _) = session.Weights(info, weights);
                var y = session.Zeros((long)tokens * rows);
                session.Queue.MatMul(w, rows, cols, session.Floats(x), y, tokens);
                return session.Read(y, (long)tokens * rows);
            }
            // Same products, summed in a different order: only float rounding may differ.
            TestData.AssertClose(Run(gpuShaped), Run(cpuShaped), 1e-5, $"opencl MatMul {type} [{cols} x {rows}] x {tokens} tokens, cpu vs gpu shape");
        }
    }

    /// <summary>
    /// The CPU-shaped attention kernel against the GPU-shaped one on the same device: F32 and F16 caches, GQA, a batch
    /// from a later position, and a head size that is not a multiple of 8 (the CPU shape falls back to the work-group
    /// kernel there, so both must still agree).
    /// </summary>
    [Theory]
    [InlineData(GgmlType.F32, 64)]
    [InlineData(GgmlType.F16, 64)]
    [InlineData(GgmlType.F16, 36)]
    public void Cpu_and_gpu_shaped_attention_agree(GgmlType cacheType, int headSize)
    {
        var cpuShaped = DeviceWithKernelShape("cpu");
        var gpuShaped = DeviceWithKernelShape("gpu");
        const int heads = 6, kvHeads = 2, tokens = 5, firstPosition = 9;
        int visible = firstPosition + tokens;
        float[] q = TestData.Random(21, tokens * heads * headSize);
        float[] k = TestData.Random(22, visible * kvHeads * headSize);
        float[] v = TestData.Random(23, visible * kvHeads * headSize);
        var p = new AttentionParams(tokens, firstPosition, heads, kvHeads, headSize, 1f / MathF.Sqrt(headSize));

        float[] Run(IBackendDevice device)
        {
            using var s = new DeviceSession(device);
            var kCache = s.Zeros(k.Length, cacheType);
            var vCache = s.Zeros(v.Length, cacheType);
            s.Queue.Convert(s.Floats(k), kCache, k.Length);
            s.Queue.Convert(s.Floats(v), vCache, v.Length);
            var output = s.Zeros(q.Length);
            s.Queue.Attention(s.Floats(q), kCache, vCache, output, p);
            return s.Read(output, q.Length);
        }

        TestData.AssertClose(Run(gpuShaped), Run(cpuShaped), 1e-5, $"opencl Attention {cacheType} cache, head size {headSize}, cpu vs gpu shape");
    }

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>
/// The CPU queue's Q4_0 weights kept repacked (<see cref="RepackedWeightStore"/> on each buffer,
/// docs/batching.md#cpu-weights-repacked-once): the same bits as reading the GGUF layout, one copy per matrix shared by the
/// queues, and a matrix uploaded again is repacked again.
/// </summary>
public class RepackedWeightStoreTests
{
    private const long Rows = 40, Cols = 96; // five groups of 8 rows

    private static CpuDevice Device(string repack) => new(new PluginOptions(new Dictionary<string, string> { ["threads"] = "2", ["repack"] = repack }));

    private static float[] MatMul(IComputeQueue queue, BackendBuffer weights, float[] x, int tokens)
    {
        var device = (CpuDevice)queue.Device;
        using var xBuf = device.Buffers.AllocateOwned("x", x.Length * sizeof(float));
        using var yBuf = device.Buffers.AllocateOwned("y", tokens * Rows * sizeof(float));
        var xt = new DeviceTensor(xBuf, 0, GgmlType.F32);
        var yt = new DeviceTensor(yBuf, 0, GgmlType.F32);
        queue.Upload(x, xt);
        queue.MatMul(new DeviceTensor(weights, 0, GgmlType.Q4_0), Rows, Cols, xt, yt, tokens);
        var y = new float[tokens * Rows];
        queue.Download(yt, y);
        return y;
    }

    private static BackendBuffer Weights(CpuDevice device, byte[] q)
    {
        var buffer = device.Buffers.AllocateOwned("w", q.Length);
        buffer.Upload(0, q);
        return buffer;
    }

    [Fact]
    public void Kept_repacked_matmuls_equal_the_file_layout_bit_for_bit_and_follow_a_new_upload()
    {
        byte[] first = TestData.Quantize(GgmlType.Q4_0, TestData.Gaussian(seed: 3, Rows * Cols));
        byte[] second = TestData.Quantize(GgmlType.Q4_0, TestData.Gaussian(seed: 4, Rows * Cols));
        var on = Device("on");
        var off = Device("off");
        Assert.True(on.RepackWeights);
        Assert.False(off.RepackWeights);
        using var onQueue = on.CreateQueue();
        using var offQueue = off.CreateQueue();
        using var onWeights = Weights(on, first);
        using var offWeights = Weights(off, first);
        foreach (int tokens in new[] { 1, 2, 4, 5 })
        {
            float[] x = TestData.Gaussian(seed: 10 + tokens, tokens * Cols);
            Assert.Equal(MatMul(offQueue, offWeights, x, tokens), MatMul(onQueue, onWeights, x, tokens));
        }
        var store = ((ICpuBuffer)onWeights).Repacked;
        Assert.Equal(RepackedWeights.Supports(GgmlType.Q4_0, Rows, Cols) ? 1 : 0, store.Count);

        // New bytes through the buffer API drop the stale copy: the next matmul reads the new matrix.
        onWeights.Upload(0, second);
        offWeights.Upload(0, second);
        Assert.Equal(0, store.Count);
        float[] x1 = TestData.Gaussian(seed: 20, 4 * Cols);
        Assert.Equal(MatMul(offQueue, offWeights, x1, 4), MatMul(onQueue, onWeights, x1, 4));
    }

    [Fact]
    public void Queues_share_one_copy_per_matrix_and_a_write_elsewhere_keeps_it()
    {
        if (!RepackedWeights.Supports(GgmlType.Q4_0, Rows, Cols)) Assert.Skip("no repacked Q4_0 kernels at this processor's level");
        var device = Device("on");
        using var a = device.CreateQueue();
        using var b = device.CreateQueue();
        byte[] q = TestData.Quantize(GgmlType.Q4_0, TestData.Gaussian(seed: 5, Rows * Cols));
        using var weights = device.Buffers.AllocateOwned("w", q.Length + 64);
        weights.Upload(0, q);
        float[] x = TestData.Gaussian(seed: 6, Cols);
        Assert.Equal(MatMul(a, weights, x, 1), MatMul(b, weights, x, 1));
        var store = ((ICpuBuffer)weights).Repacked;
        Assert.Equal(1, store.Count);
        Assert.Equal(Rows / 8 * (Cols / 32) * RepackedGemm.Q4GroupBlockBytes, store.Bytes);
        weights.Memset(q.Length, 64, 0); // past the matrix
        Assert.Equal(1, store.Count);
    }

    [Fact]
    public void The_repack_option_reads_on_and_off_and_the_environment_wins()
    {
        var none = new PluginOptions();
        Assert.True(CpuDevice.ResolveRepack(none, _ => null));
        Assert.False(CpuDevice.ResolveRepack(new PluginOptions(new Dictionary<string, string> { ["repack"] = "off" }), _ => null));
        Assert.False(CpuDevice.ResolveRepack(none, v => v == "PLUGINENGINE_CPU_REPACK" ? "off" : null));
        Assert.True(CpuDevice.ResolveRepack(new PluginOptions(new Dictionary<string, string> { ["repack"] = "off" }), v => v == "PLUGINENGINE_CPU_REPACK" ? "on" : null));
        var bad = Assert.Throws<PluginOptionException>(() => CpuDevice.ResolveRepack(new PluginOptions(new Dictionary<string, string> { ["repack"] = "maybe" }), _ => null));
        Assert.Contains("repack", bad.Message);
    }
}

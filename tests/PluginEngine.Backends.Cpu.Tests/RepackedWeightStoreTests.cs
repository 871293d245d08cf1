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

    private static readonly CpuDevice Device = new(new PluginOptions(new Dictionary<string, string> { ["threads"] = "2" }));

    private static CpuComputeQueue Queue(bool repack) => new(Device, threads: 2, repack);

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
        using var onQueue = Queue(repack: true);
        using var offQueue = Queue(repack: false);
        using var onWeights = Weights(Device, first);
        using var offWeights = Weights(Device, first);
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
        var device = Device;
        using var a = Queue(repack: true);
        using var b = Queue(repack: true);
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
    public void PLUGINENGINE_CPU_REPACK_turns_it_off_and_is_on_by_default()
    {
        Assert.True(CpuDevice.ResolveRepack(_ => null));
        Assert.True(CpuDevice.ResolveRepack(v => v == "PLUGINENGINE_CPU_REPACK" ? "on" : null));
        Assert.False(CpuDevice.ResolveRepack(v => v == "PLUGINENGINE_CPU_REPACK" ? "off" : null));
        var bad = Assert.Throws<PluginOptionException>(() => CpuDevice.ResolveRepack(_ => "maybe"));
        Assert.Contains("PLUGINENGINE_CPU_REPACK", bad.Message);
    }
}

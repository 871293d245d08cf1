using PluginEngine.Abstractions;
using PluginEngine.Core.Quantization;
using Xunit;

namespace PluginEngine.Conformance;

/// <summary>
/// One device, one compute queue, and the owned buffers a test allocated on it (disposed with the session).
/// Weights are placed the way the loader places them: alloc size from the provider, slide poisoned with 0xFF first
/// (NaN as f16 scales) and then zeroed by <see cref="BackendBuffer.InitTensor"/>, so a backend whose init path does not
/// zero the slide produces NaN in the op tests.
/// </summary>
public sealed class DeviceSession : IDisposable
{
    private readonly List<BackendBuffer> _buffers = [];

    public DeviceSession(IBackendDevice device)
    {
        Device = device;
        Queue = device.CreateQueue() ?? throw new InvalidOperationException($"{device.Description.Backend} has no compute queue");
    }

    public IBackendDevice Device { get; }

    public IComputeQueue Queue { get; }

    /// <summary>An owned buffer holding <paramref name="values"/> as F32 (uploaded through the queue).</summary>
    public DeviceTensor Floats(ReadOnlySpan<float> values)
    {
        var t = Zeros(values.Length);
        Queue.Upload(values, t);
        return t;
    }

    /// <summary>An owned buffer of <paramref name="count"/> zeroed elements of <paramref name="type"/>.</summary>
    public DeviceTensor Zeros(long count, GgmlType type = GgmlType.F32)
    {
        var buffer = Allocate($"test {type}[{count}]", Math.Max(GgmlTypes.RowSize(type, count), 4));
        buffer.Clear(0);
        return new DeviceTensor(buffer, 0, type);
    }

    /// <summary>Weights placed like the loader places them (see the class remarks); returns the tensor and its alloc size.</summary>
    public (DeviceTensor Tensor, long AllocSize) Weights(TensorInfo info, ReadOnlySpan<byte> data)
    {
        long alloc = Device.Buffers.GetAllocSize(info);
        Assert.True(alloc >= info.ByteSize, $"{Device.Description.Backend}: GetAllocSize({info}) = {alloc} is below its byte size {info.ByteSize}");
        // A 64-byte prefix puts the tensor at a non-zero offset, as in a real weights buffer.
        const long offset = 64;
        var buffer = Allocate($"weights {info.Name}", offset + alloc);
        buffer.Memset(0, buffer.Size, 0xFF);
        buffer.InitTensor(info, offset, alloc);
        buffer.Upload(offset, data);
        return (new DeviceTensor(buffer, offset, info.Type), alloc);
    }

    /// <summary>Downloads <paramref name="count"/> F32 values (waits for queued work).</summary>
    public float[] Read(DeviceTensor t, long count)
    {
        var values = new float[count];
        Queue.Download(t, values);
        return values;
    }

    /// <summary>Raw bytes of a tensor after the queue drained.</summary>
    public byte[] ReadBytes(DeviceTensor t, long count)
    {
        Queue.Synchronize();
        var bytes = new byte[count];
        t.Buffer.Download(t.Offset, bytes);
        return bytes;
    }

    private BackendBuffer Allocate(string name, long size)
    {
        var buffer = Device.Buffers.AllocateOwned(name, size);
        _buffers.Add(buffer);
        return buffer;
    }

    public void Dispose()
    {
        Queue.Synchronize();
        Queue.Dispose();
        foreach (var b in _buffers) b.Dispose();
    }
}

/// <summary>Deterministic test data and the comparison every conformance test uses.</summary>
public static class TestData
{
    /// <summary>Gaussian-ish values in roughly [-scale·3, scale·3].</summary>
    public static float[] Random(int seed, long count, float scale = 1f)
    {
        var rng = new Random(seed);
        var v = new float[count];
        for (long i = 0; i < count; i++)
            v[i] = (float)((rng.NextDouble() + rng.NextDouble() + rng.NextDouble() - 1.5) * 2 * scale);
        return v;
    }

    /// <summary>A [rows × cols] matrix of random values stored row by row in <paramref name="type"/>.</summary>
    public static byte[] Matrix(GgmlType type, int seed, long rows, long cols)
    {
        long rowBytes = GgmlTypes.RowSize(type, cols);
        var bytes = new byte[rows * rowBytes];
        var values = Random(seed, cols);
        var rng = new Random(seed + 1);
        for (long r = 0; r < rows; r++)
        {
            for (long c = 0; c < cols; c++) values[c] = (float)(rng.NextDouble() * 2 - 1);
            Quantizer.Quantize(type, values, bytes.AsSpan((int)(r * rowBytes), (int)rowBytes));
        }
        return bytes;
    }

    /// <summary>
    /// Asserts every value is finite and max |expected - actual| ≤ tolerance · max(rms(expected), 1e-3); writes the
    /// measured relative error to the test output so the tolerances can be reviewed.
    /// </summary>
    public static double AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tolerance, string what)
        => AssertClose(expected, actual, tolerance, double.PositiveInfinity, what);

    /// <summary>
    /// As <see cref="AssertClose(ReadOnlySpan{float}, ReadOnlySpan{float}, double, string)"/>, and also
    /// rms(expected - actual) ≤ <paramref name="rmsTolerance"/> · rms(expected): for end-to-end logits, where a few
    /// outliers of accumulated rounding are expected but the bulk must agree closely.
    /// </summary>
    public static double AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double tolerance, double rmsTolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        double sumSq = 0;
        foreach (float e in expected) sumSq += (double)e * e;
        double rms = Math.Max(Math.Sqrt(sumSq / Math.Max(1, expected.Length)), 1e-3);
        double worst = 0, errSq = 0;
        int worstAt = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            if (!float.IsFinite(actual[i])) Assert.Fail($"{what}: element {i} is {actual[i]} (reference {expected[i]})");
            double err = Math.Abs((double)expected[i] - actual[i]);
            errSq += err * err;
            if (err > worst) { worst = err; worstAt = i; }
        }
        double relative = worst / rms;
        double rmsRelative = Math.Sqrt(errSq / Math.Max(1, expected.Length)) / rms;
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"{what}: max |error| {worst:G3} = {relative:G3} x rms {rms:G3} (tolerance {tolerance:G3}); rms error {rmsRelative:G3} x rms");
        if (rmsRelative > rmsTolerance)
            Assert.Fail($"{what}: rms error {rmsRelative:G4} x rms {rms:G4} > tolerance {rmsTolerance:G3}");
        if (relative > tolerance)
            Assert.Fail($"{what}: element {worstAt} is {actual[worstAt]}, reference {expected[worstAt]}: error {worst:G4} = {relative:G4} x rms {rms:G4} > tolerance {tolerance:G3}");
        return relative;
    }
}

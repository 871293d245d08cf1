using PluginEngine.Abstractions;

namespace PluginEngine.Tests.Support;

/// <summary>
/// The CPU's buffers and kernels behind a queue that supports only <paramref name="ops"/>: every other op throws, so a
/// call the core should have sent to the CPU fails the test instead of silently running here.
/// </summary>
/// <param name="brokenAdd">Adds 0.5 to every sum: a backend with a wrong op, which the checks must catch.</param>
/// <param name="index">Tells several partial devices apart (a split over two of them); null: the one partial device.</param>
/// <param name="cacheTypes">The KV cache types its Attention and Convert take (as a GPU queue that has kernels for F32 and F16
/// only); null: every type the CPU takes.</param>
internal sealed class PartialDevice(IBackendDevice cpu, HashSet<ComputeOp> ops, bool brokenAdd = false, int? index = null, HashSet<GgmlType>? cacheTypes = null) : IBackendDevice
{
    public DeviceDescription Description { get; } = cpu.Description with
    {
        Backend = "partial", StableId = "partial:" + cpu.Description.StableId + (index is { } i ? $"/{i}" : ""), Kind = DeviceKind.Accelerator,
    };
    public IBufferProvider Buffers => cpu.Buffers;
    public IComputeQueue CreateQueue() => new PartialQueue(this, cpu.CreateQueue()!, ops, brokenAdd, cacheTypes);
}

internal sealed class PartialQueue(IBackendDevice device, IComputeQueue inner, HashSet<ComputeOp> ops, bool brokenAdd, HashSet<GgmlType>? cacheTypes = null) : IComputeQueue
{
    public IBackendDevice Device => device;
    public bool Supports(ComputeOp op, GgmlType type) => ops.Contains(op) && inner.Supports(op, type)
        && (cacheTypes is null || op is not (ComputeOp.Attention or ComputeOp.Convert) || cacheTypes.Contains(type));
    private IComputeQueue Check(ComputeOp op) => ops.Contains(op) ? inner : throw new NotSupportedException($"partial: {op} was called although Supports said no");
    public void GetRows(DeviceTensor table, long rowLength, ReadOnlySpan<int> rows, DeviceTensor dst) => Check(ComputeOp.GetRows).GetRows(table, rowLength, rows, dst);
    public void RmsNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor y, int rows, int n, float eps) => Check(ComputeOp.RmsNorm).RmsNorm(x, weight, y, rows, n, eps);
    public void MatMul(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens) => Check(ComputeOp.MatMul).MatMul(w, wRows, wCols, x, y, tokens);
    public void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope) => Check(ComputeOp.Rope).Rope(x, tokens, heads, headSize, firstPosition, rope);
    public void RopeWithFactors(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope, DeviceTensor factors)
        => Check(ComputeOp.RopeFrequencyFactors).RopeWithFactors(x, tokens, heads, headSize, firstPosition, rope, factors);
    public void Attention(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output, AttentionParams p)
        => CheckType(ComputeOp.Attention, kCache.Type).Attention(q, kCache, vCache, output, p);
    private IComputeQueue CheckType(ComputeOp op, GgmlType type)
        => cacheTypes is null || cacheTypes.Contains(type) ? Check(op) : throw new NotSupportedException($"partial: {op} of {type} was called although Supports said no");
    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n) => Check(ComputeOp.SiluMul).SiluMul(gate, up, y, n);
    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor y, long n)
    {
        Check(ComputeOp.Add).Add(a, b, y, n);
        if (!brokenAdd) return;
        var values = new float[n];
        inner.Download(y, values);
        for (long i = 0; i < n; i++) values[i] += 0.5f;
        inner.Upload(values, y);
    }
    public void AddBias(DeviceTensor x, DeviceTensor bias, int rows, int n) => Check(ComputeOp.AddBias).AddBias(x, bias, rows, n);
    public void Convert(DeviceTensor src, DeviceTensor dst, long n) => CheckType(ComputeOp.Convert, dst.Type).Convert(src, dst, n);
    public void Upload(ReadOnlySpan<float> source, DeviceTensor dst) => inner.Upload(source, dst);
    public void Download(DeviceTensor src, Span<float> destination) => inner.Download(src, destination);
    public void Synchronize() => inner.Synchronize();
    public void Dispose() => inner.Dispose();
}

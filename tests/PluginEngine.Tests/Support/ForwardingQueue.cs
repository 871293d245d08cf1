using PluginEngine.Abstractions;

namespace PluginEngine.Tests.Support;

/// <summary>
/// A queue under its own device that forwards every primitive op to another queue (the CPU's, in these tests). The fused
/// ops and the members added after API 1.0 keep the interface's defaults, unless a test's queue derives from this one,
/// re-declares <see cref="IComputeQueue"/> and implements them.
/// </summary>
internal abstract class ForwardingQueue(IBackendDevice device, IComputeQueue inner) : IComputeQueue
{
    protected IComputeQueue Inner => inner;
    public IBackendDevice Device => device;
    public virtual bool Supports(ComputeOp op, GgmlType type) => inner.Supports(op, type);
    public void GetRows(DeviceTensor table, long rowLength, ReadOnlySpan<int> rows, DeviceTensor dst) => inner.GetRows(table, rowLength, rows, dst);
    public void RmsNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor y, int rows, int n, float eps) => inner.RmsNorm(x, weight, y, rows, n, eps);
    public void MatMul(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens) => inner.MatMul(w, wRows, wCols, x, y, tokens);
    public void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope) => inner.Rope(x, tokens, heads, headSize, firstPosition, rope);
    public void Attention(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output, AttentionParams p) => inner.Attention(q, kCache, vCache, output, p);
    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n) => inner.SiluMul(gate, up, y, n);
    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor y, long n) => inner.Add(a, b, y, n);
    public void AddBias(DeviceTensor x, DeviceTensor bias, int rows, int n) => inner.AddBias(x, bias, rows, n);
    public void Convert(DeviceTensor src, DeviceTensor dst, long n) => inner.Convert(src, dst, n);
    public void Upload(ReadOnlySpan<float> source, DeviceTensor dst) => inner.Upload(source, dst);
    public void Download(DeviceTensor src, Span<float> destination) => inner.Download(src, destination);
    public void Synchronize() => inner.Synchronize();
    public void Dispose() => inner.Dispose();
}

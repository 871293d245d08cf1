using PluginEngine.Abstractions;

namespace MyBackend;

/// <summary>
/// The ops, run synchronously in plain C#. It implements a few (RMS norm, SiLU·mul, add, and matmul / get-rows of F32 and
/// F16 weights) and says no to the rest in <see cref="Supports"/>: the core then runs those on the CPU backend, copying the
/// activations there and back, and counts them ("cpu fallback ops" in the run summary). Grow it one op at a time: make
/// Supports say yes, implement the op, and run the conformance kit (MyBackend.Tests), which compares it with the CPU.
/// </summary>
public sealed class MyBackendQueue(IBackendDevice device) : IComputeQueue
{
    public IBackendDevice Device { get; } = device;

    public bool Supports(ComputeOp op, GgmlType type) => op switch
    {
        ComputeOp.RmsNorm or ComputeOp.SiluMul or ComputeOp.Add => type == GgmlType.F32,
        ComputeOp.MatMul or ComputeOp.GetRows => type is GgmlType.F32 or GgmlType.F16,
        _ => false, // Rope, Attention, Convert, AddBias, quantized weights, ...: the CPU runs them
    };

    private static Span<float> F32(DeviceTensor t, long count) => HostMemoryBuffer.Elements<float>(t, count);

    /// <summary>Row <paramref name="row"/> of a [rows × cols] weight of type F32 or F16, as floats, into <paramref name="into"/>.</summary>
    private static void WeightRow(DeviceTensor w, long row, long cols, Span<float> into)
    {
        if (w.Type == GgmlType.F32)
        {
            HostMemoryBuffer.Elements<float>(w.At(row * cols * sizeof(float)), cols).CopyTo(into);
            return;
        }
        if (w.Type != GgmlType.F16) throw new NotSupportedException($"mybackend: weights of type {w.Type}");
        var halves = HostMemoryBuffer.Elements<Half>(w.At(row * cols * 2), cols);
        for (int c = 0; c < halves.Length; c++) into[c] = (float)halves[c];
    }

    public void GetRows(DeviceTensor table, long rowLength, ReadOnlySpan<int> rows, DeviceTensor dst)
    {
        var output = F32(dst, rows.Length * rowLength);
        for (int i = 0; i < rows.Length; i++) WeightRow(table, rows[i], rowLength, output.Slice((int)(i * rowLength), (int)rowLength));
    }

    public void RmsNorm(DeviceTensor x, DeviceTensor weight, DeviceTensor y, int rows, int n, float eps)
    {
        var input = F32(x, (long)rows * n);
        var w = F32(weight, n);
        var output = F32(y, (long)rows * n);
        for (int r = 0; r < rows; r++)
        {
            var row = input.Slice(r * n, n);
            double sum = 0;
            foreach (float v in row) sum += (double)v * v;
            float scale = (float)(1.0 / Math.Sqrt(sum / n + eps));
            for (int i = 0; i < n; i++) output[r * n + i] = row[i] * scale * w[i];
        }
    }

    public void MatMul(DeviceTensor w, long wRows, long wCols, DeviceTensor x, DeviceTensor y, int tokens)
    {
        var input = F32(x, tokens * wCols);
        var output = F32(y, tokens * wRows);
        var row = new float[wCols];
        for (long r = 0; r < wRows; r++)
        {
            WeightRow(w, r, wCols, row);
            for (int t = 0; t < tokens; t++)
            {
                var xt = input.Slice((int)(t * wCols), (int)wCols);
                double sum = 0;
                for (int c = 0; c < row.Length; c++) sum += (double)xt[c] * row[c];
                output[(int)(t * wRows + r)] = (float)sum;
            }
        }
    }

    public void SiluMul(DeviceTensor gate, DeviceTensor up, DeviceTensor y, long n)
    {
        var g = F32(gate, n);
        var u = F32(up, n);
        var output = F32(y, n);
        for (int i = 0; i < n; i++) output[i] = g[i] / (1f + MathF.Exp(-g[i])) * u[i];
    }

    public void Add(DeviceTensor a, DeviceTensor b, DeviceTensor y, long n)
    {
        var left = F32(a, n);
        var right = F32(b, n);
        var output = F32(y, n);
        for (int i = 0; i < n; i++) output[i] = left[i] + right[i];
    }

    // Declared unsupported above: the core never calls these on this queue.
    public void Rope(DeviceTensor x, int tokens, int heads, int headSize, int firstPosition, RopeParams rope) => throw Unsupported(ComputeOp.Rope);
    public void Attention(DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor output, AttentionParams p) => throw Unsupported(ComputeOp.Attention);
    public void AddBias(DeviceTensor x, DeviceTensor bias, int rows, int n) => throw Unsupported(ComputeOp.AddBias);
    public void Convert(DeviceTensor src, DeviceTensor dst, long n) => throw Unsupported(ComputeOp.Convert);

    private NotSupportedException Unsupported(ComputeOp op) => new($"{Device.Description.Backend} does not implement {op} (Supports says so)");

    public void Upload(ReadOnlySpan<float> source, DeviceTensor dst) => source.CopyTo(F32(dst, source.Length));

    public void Download(DeviceTensor src, Span<float> destination) => F32(src, destination.Length).CopyTo(destination);

    public void Synchronize() { } // every op above has finished when it returns

    public void Dispose() { }
}

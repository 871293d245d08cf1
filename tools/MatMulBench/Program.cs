using System.Diagnostics;
using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;
using PluginEngine.Core.Quantization;

// Usage: MatMulBench [reps] [types] [n list] [thread list]
// Prints one line per configuration: the median, min and max milliseconds of `reps` timed MatMul.Run calls
// (after one warm-up) and the median GFLOP/s equivalent (2·rows·cols·n).
int reps = args.Length > 0 ? int.Parse(args[0]) : 5;
var types = (args.Length > 1 ? args[1] : "Q4_0,Q8_0,Q4_K,F16").Split(',').Select(Enum.Parse<GgmlType>).ToArray();
var ns = (args.Length > 2 ? args[2] : "1,512").Split(',').Select(long.Parse).ToArray();
var threadCounts = (args.Length > 3 ? args[3] : "1,2").Split(',').Select(int.Parse).ToArray();
var shapes = new (long Rows, long Cols)[] { (2048, 2048), (5632, 2048) };

// Decode one Q4_0 block first: that initializes the f16 table before any dot kernel is compiled, so a build whose
// kernels do not arrange that themselves is not timed with the slow first-compiled kernel (see QuantDot's static constructor).
unsafe
{
    var block = new byte[18];
    var decoded = new float[32];
    fixed (byte* pb = block)
    fixed (float* pd = decoded)
        RowDequantizer.DequantizeRow(GgmlType.Q4_0, pb, pd, 32);
}

var rng = new Random(1);
foreach (var type in types)
foreach (var (rows, cols) in shapes)
{
    var wf = new float[rows * cols];
    for (long i = 0; i < wf.Length; i++) wf[i] = (float)(rng.NextDouble() * 2 - 1);
    var wq = new byte[GgmlTypes.RowSize(type, cols) * rows];
    Quantizer.Quantize(type, wf, wq);
    foreach (long n in ns)
    {
        var x = new float[n * cols];
        for (long i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var y = new float[n * rows];
        foreach (int threads in threadCounts)
        {
            using var pool = new CpuWorkerPool(threads);
            using var scratch = new MatMulScratch();
            int inner = n == 1 ? 50 : 1; // n = 1 is short: time a batch of calls
            var times = new double[reps];
            unsafe
            {
                fixed (byte* pw = wq)
                fixed (float* px = x, py = y)
                {
                    for (int k = 0; k < inner; k++) MatMul.Run(type, pw, rows, cols, px, n, py, pool, scratch);
                    for (int r = 0; r < reps; r++)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        for (int k = 0; k < inner; k++) MatMul.Run(type, pw, rows, cols, px, n, py, pool, scratch);
                        times[r] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds / inner;
                    }
                }
            }
            Array.Sort(times);
            double median = times[reps / 2];
            Console.WriteLine($"{type,-5} {rows,5}x{cols,-5} n={n,-4} threads={threads}  median {median,9:F3} ms  min {times[0],9:F3}  max {times[^1],9:F3}  {2.0 * rows * cols * n / median / 1e6,7:F2} GFLOP/s  checksum {y[0] + y[^1]:G6}");
        }
    }
}

using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;
using PluginEngine.Core.Quantization;

// Usage: MatMulBench [reps] [types] [n list] [thread list] [cache|stream] [shapes, e.g. 2048x2048,5632x2048] [file|repacked|both] [offset]
// Prints one line per configuration: the median, min and max milliseconds of `reps` timed MatMul.Run calls
// (after one warm-up), the median GFLOP/s equivalent (2·rows·cols·n) and the weight bytes read per second.
// `cache` (default) times the same matrix over and over (it stays in L2/L3: kernel compute speed); `stream` cycles
// through copies of it totalling ≥ 512 MiB, as generation does with a model's layers (memory-bound speed). In stream
// mode a plain read of the same bytes is timed first: the machine's read bandwidth, the bound for generation.
// The last argument picks the weights' form: `file` (default) the GGUF layout read in place (Q4_0 repacked per call from 3
// tokens), `repacked` the matrix kept repacked once (RepackedWeights, what the CPU backend does for Q4_0 weights; other types
// fall back to `file`), `both` one line for each, alternating (docs/batching.md#cpu-weights-repacked-once).
int reps = args.Length > 0 ? int.Parse(args[0]) : 5;
var types = (args.Length > 1 ? args[1] : "Q4_0,Q8_0,Q4_K,F16").Split(',').Select(Enum.Parse<GgmlType>).ToArray();
var ns = (args.Length > 2 ? args[2] : "1,512").Split(',').Select(long.Parse).ToArray();
var threadCounts = (args.Length > 3 ? args[3] : "1,2").Split(',').Select(int.Parse).ToArray();
bool stream = args.Length > 4 && args[4] == "stream";
var shapes = (args.Length > 5 ? args[5] : "2048x2048,5632x2048").Split(',')
    .Select(shape => shape.Split('x')).Select(p => (Rows: long.Parse(p[0]), Cols: long.Parse(p[1]))).ToArray();
string forms = args.Length > 6 ? args[6] : "file";
// Bytes past a 64-byte boundary where each matrix starts (a GGUF file aligns tensors to 32 bytes only, so a mapped model's
// matrices can start half-way into a cache line).
int offset = args.Length > 7 ? int.Parse(args[7]) : 0;
bool[] packedForms = forms switch { "file" => [false], "repacked" => [true], "both" => [false, true], _ => throw new ArgumentException($"weights form: file, repacked or both, not '{forms}'") };
const long StreamBytes = 512L << 20;

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

if (stream)
{
    unsafe
    {
        var buffer = (byte*)NativeMemory.AlignedAlloc((nuint)StreamBytes, 64);
        new Span<byte>(buffer, (int)Math.Min(StreamBytes, int.MaxValue)).Fill(1);
        for (long off = int.MaxValue; off < StreamBytes; off += 4096) buffer[off] = 1;
        foreach (int threads in threadCounts)
        {
            var times = new double[reps];
            for (int r = -1; r < reps; r++)
            {
                long t0 = Stopwatch.GetTimestamp();
                long chunk = StreamBytes / threads;
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => ReadAll(buffer + i * chunk, chunk));
                if (r >= 0) times[r] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }
            Array.Sort(times);
            Console.WriteLine($"read bandwidth  threads={threads}  {StreamBytes / times[reps / 2] / 1e6,7:F2} GB/s");
        }
        NativeMemory.AlignedFree(buffer);
    }
}

var rng = new Random(1);
foreach (var type in types)
foreach (var (rows, cols) in shapes)
{
    var wf = new float[rows * cols];
    for (long i = 0; i < wf.Length; i++) wf[i] = (float)(rng.NextDouble() * 2 - 1);
    long matrixBytes = GgmlTypes.RowSize(type, cols) * rows;
    var wq = new byte[matrixBytes];
    Quantizer.Quantize(type, wf, wq);
    int copies = stream ? (int)Math.Max(1, StreamBytes / matrixBytes) : 1;
    var matrices = new nint[copies];
    unsafe
    {
        for (int c = 0; c < copies; c++)
        {
            matrices[c] = (nint)NativeMemory.AlignedAlloc((nuint)(matrixBytes + offset), 64) + offset;
            wq.AsSpan().CopyTo(new Span<byte>((void*)matrices[c], (int)matrixBytes));
        }
    }
    foreach (long n in ns)
    {
        var x = new float[n * cols];
        for (long i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var y = new float[n * rows];
        foreach (int threads in threadCounts)
        foreach (bool packedForm in packedForms)
        {
            using var pool = new CpuWorkerPool(threads);
            using var scratch = new MatMulScratch();
            bool packed = packedForm && RepackedWeights.Supports(type, rows, cols);
            RepackedWeights?[] repacked = new RepackedWeights?[copies];
            unsafe
            {
                if (packed)
                    for (int c = 0; c < copies; c++) repacked[c] = RepackedWeights.Create(type, (byte*)matrices[c], rows, cols, pool);
            }
            // n = 1 is short: time a batch of calls (in stream mode, one call per copy).
            int inner = stream ? copies : n == 1 ? 50 : 1;
            var times = new double[reps];
            var cpuTimes = new double[reps];
            unsafe
            {
                fixed (float* px = x, py = y)
                {
                    float* xs = px, ys = py;
                    void Call(int k)
                    {
                        if (packed) MatMul.Run(repacked[k % copies]!, (byte*)matrices[k % copies], xs, n, ys, pool, scratch);
                        else MatMul.Run(type, (byte*)matrices[k % copies], rows, cols, xs, n, ys, pool, scratch);
                    }
                    for (int k = 0; k < inner; k++) Call(k);
                    for (int r = 0; r < reps; r++)
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        double c0 = ThreadCpuMs();
                        for (int k = 0; k < inner; k++) Call(k);
                        cpuTimes[r] = (ThreadCpuMs() - c0) / inner;
                        times[r] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds / inner;
                    }
                }
            }
            foreach (var p in repacked) p?.Dispose();
            Array.Sort(times);
            Array.Sort(cpuTimes);
            double median = times[reps / 2];
            // With one thread the pool runs the job on this thread, so its CPU time is the kernel's alone: on a busy
            // machine that is the steadier number (it leaves out time slices given to other processes).
            string cpu = threads == 1 ? $"  thread-cpu median {cpuTimes[reps / 2],9:F3} ms ({2.0 * rows * cols * n / cpuTimes[reps / 2] / 1e6,7:F2} GFLOP/s)" : "";
            string form = packed ? "repacked" : "file";
            Console.WriteLine($"{type,-5} {rows,5}x{cols,-5} n={n,-4} threads={threads} {form,-8}  median {median,9:F3} ms  min {times[0],9:F3}  max {times[^1],9:F3}  {2.0 * rows * cols * n / median / 1e6,7:F2} GFLOP/s  {matrixBytes / median / 1e6,6:F2} GB/s{cpu}  checksum {y[0] + y[^1]:G6}");
        }
    }
    unsafe
    {
        foreach (var m in matrices) NativeMemory.AlignedFree((void*)(m - offset));
    }
}

static unsafe double ThreadCpuMs()
{
    Timespec ts;
    if (Native.ClockGetTime(3 /* CLOCK_THREAD_CPUTIME_ID */, &ts) != 0) return double.NaN;
    return ts.Seconds * 1e3 + ts.Nanoseconds / 1e6;
}

static unsafe void ReadAll(byte* p, long bytes)
{
    Vector256<byte> a0 = default, a1 = default;
    for (long i = 0; i + 64 <= bytes; i += 64)
    {
        a0 |= Vector256.Load(p + i);
        a1 |= Vector256.Load(p + i + 32);
    }
    if ((a0 | a1) == Vector256<byte>.Zero) Console.Write("");
}

[StructLayout(LayoutKind.Sequential)]
struct Timespec
{
    public long Seconds;
    public long Nanoseconds;
}

static unsafe class Native
{
    [DllImport("libc", EntryPoint = "clock_gettime")]
    public static extern int ClockGetTime(int clock, Timespec* time);
}

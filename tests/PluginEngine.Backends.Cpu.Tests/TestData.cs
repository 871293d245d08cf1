using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Cpu.Kernels;
using PluginEngine.Core.Quantization;

namespace PluginEngine.Backends.Cpu.Tests;

/// <summary>Deterministic inputs, tolerance checks and helpers shared by the CPU backend's tests.</summary>
internal static class TestData
{
    /// <summary>Row lengths that exercise every vector width and every scalar tail (1 .. 4096+3).</summary>
    public static readonly TheoryData<int> OddLengths = new(1, 7, 33, 100, 4096 + 3);

    public static readonly GgmlType[] WeightTypes =
        [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];

    public static readonly GgmlType[] ReferenceTypes = [.. WeightTypes, GgmlType.Q8_K];

    public static readonly KernelIsa[] Isas = [KernelIsa.Scalar, KernelIsa.Avx2, KernelIsa.Avx512];

    /// <summary>Row lengths to test per type: odd tails for float types, 4096+96 for 32-element blocks, 256/768 for K-quants.</summary>
    public static long[] ColsFor(GgmlType type) => GgmlTypes.Get(type).BlockSize switch
    {
        1 => [1, 37, 96, 4096 + 96],
        32 => [32, 96, 4096 + 96],
        _ => [256, 768],
    };

    /// <summary>Skips the running test when this processor cannot execute <paramref name="isa"/>.</summary>
    public static void SkipUnlessSupported(KernelIsa isa)
    {
        if (!KernelIsaSupport.IsSupported(isa))
            Assert.Skip($"{isa} kernels cannot run on this processor ({System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}); they are exercised on a machine that has it");
    }

    /// <summary>Gaussian values whose scale changes every 32 elements (so blocks differ), with a few outliers.</summary>
    public static float[] Gaussian(int seed, long count, float scale = 1f)
    {
        var rng = new Random(seed);
        var x = new float[count];
        float blockScale = scale;
        for (long i = 0; i < count; i++)
        {
            if (i % 32 == 0) blockScale = scale * (float)(0.25 + 1.75 * rng.NextDouble());
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            double g = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
            if (rng.Next(97) == 0) g *= 4; // outlier
            x[i] = (float)(g * blockScale);
        }
        return x;
    }

    /// <summary>Values drawn uniformly from [<paramref name="low"/>, <paramref name="high"/>).</summary>
    public static float[] Uniform(int n, int seed, float low = -1f, float high = 1f)
    {
        var random = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = low + (float)random.NextDouble() * (high - low);
        return a;
    }

    /// <summary>Fails unless |expected - actual| ≤ abs + rel·|expected|, naming the element.</summary>
    public static void Close(double expected, float actual, double rel, double abs, string what, int index)
    {
        double error = Math.Abs(expected - actual);
        if (!(error <= abs + rel * Math.Abs(expected)))
            Assert.Fail($"{what}[{index}]: expected {expected:R}, got {actual:R} (error {error:E3}, allowed {abs + rel * Math.Abs(expected):E3})");
    }

    /// <summary><see cref="Close"/> for every element.</summary>
    public static void AllClose(double[] expected, float[] actual, double rel, double abs, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++) Close(expected[i], actual[i], rel, abs, what, i);
    }

    public static byte[] Quantize(GgmlType type, float[] x)
    {
        var bytes = new byte[GgmlTypes.RowSize(type, x.Length)];
        Quantizer.Quantize(type, x, bytes);
        return bytes;
    }

    public static float[] Dequantize(GgmlType type, byte[] bytes, long count)
    {
        var y = new float[count];
        Dequantizer.Dequantize(type, bytes, y);
        return y;
    }
}

/// <summary>
/// Native memory whose last byte sits right before an inaccessible page, so a kernel that reads even one
/// byte past the data faults instead of silently reading garbage (Linux/macOS; elsewhere plain memory).
/// </summary>
internal sealed unsafe class GuardedBuffer : IDisposable
{
    private const int PROT_NONE = 0, PROT_READ = 1, PROT_WRITE = 2, MAP_PRIVATE = 2;
    private static readonly int MapAnonymous = OperatingSystem.IsMacOS() ? 0x1000 : 0x20;

    private readonly byte* _base;
    private readonly nuint _mapped;

    public GuardedBuffer(long length)
    {
        Length = length;
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())
        {
            const long page = 65536; // at least the page size on every supported system
            long dataPages = (length + page - 1) / page;
            _mapped = (nuint)((dataPages + 1) * page);
            _base = (byte*)mmap(null, _mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MapAnonymous, -1, 0);
            if (_base == (byte*)-1) throw new InvalidOperationException($"mmap of {_mapped} bytes failed: errno {Marshal.GetLastPInvokeError()}");
            if (mprotect(_base + dataPages * page, (nuint)page, PROT_NONE) != 0) throw new InvalidOperationException("mprotect failed");
            Pointer = _base + dataPages * page - length;
        }
        else
        {
            _base = (byte*)NativeMemory.Alloc((nuint)Math.Max(1, length));
            Pointer = _base;
        }
    }

    public byte* Pointer { get; }

    public long Length { get; }

    public Span<byte> Span => new(Pointer, checked((int)Length));

    public void Dispose()
    {
        if (_mapped != 0) munmap(_base, _mapped);
        else NativeMemory.Free(_base);
    }

    [DllImport("libc", SetLastError = true)] private static extern void* mmap(void* addr, nuint length, int prot, int flags, int fd, nint offset);
    [DllImport("libc", SetLastError = true)] private static extern int mprotect(void* addr, nuint length, int prot);
    [DllImport("libc", SetLastError = true)] private static extern int munmap(void* addr, nuint length);
}

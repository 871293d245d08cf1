using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// A float operation of one input, written once per vector width so the drivers in
/// <see cref="VectorDriver"/> can run it at the widest width the processor accelerates.
/// Implementations are small structs: the JIT specializes the driver per struct and inlines the calls.
/// </summary>
public interface IUnaryFloatOp
{
    float Invoke(float x);
    Vector128<float> Invoke(Vector128<float> x);
    Vector256<float> Invoke(Vector256<float> x);
    Vector512<float> Invoke(Vector512<float> x);
}

/// <summary>A float operation of two inputs; see <see cref="IUnaryFloatOp"/>.</summary>
public interface IBinaryFloatOp
{
    float Invoke(float a, float b);
    Vector128<float> Invoke(Vector128<float> a, Vector128<float> b);
    Vector256<float> Invoke(Vector256<float> a, Vector256<float> b);
    Vector512<float> Invoke(Vector512<float> a, Vector512<float> b);
}

/// <summary>
/// Generic element-wise drivers: Vector512 blocks, then Vector256, then Vector128, then a scalar tail,
/// each step used only when the hardware accelerates it. Input and output may be the same row (in place):
/// every block is loaded before it is stored.
/// </summary>
public static unsafe class VectorDriver
{
    /// <summary>y[i] = op(x[i]) for i in [0, n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Apply<TOp>(TOp op, float* x, float* y, int n) where TOp : struct, IUnaryFloatOp
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= n - 16; i += 16)
                op.Invoke(Vector512.Load(x + i)).Store(y + i);
        if (Vector256.IsHardwareAccelerated)
            for (; i <= n - 8; i += 8)
                op.Invoke(Vector256.Load(x + i)).Store(y + i);
        if (Vector128.IsHardwareAccelerated)
            for (; i <= n - 4; i += 4)
                op.Invoke(Vector128.Load(x + i)).Store(y + i);
        for (; i < n; i++)
            y[i] = op.Invoke(x[i]);
    }

    /// <summary>y[i] = op(a[i], b[i]) for i in [0, n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Apply<TOp>(TOp op, float* a, float* b, float* y, int n) where TOp : struct, IBinaryFloatOp
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= n - 16; i += 16)
                op.Invoke(Vector512.Load(a + i), Vector512.Load(b + i)).Store(y + i);
        if (Vector256.IsHardwareAccelerated)
            for (; i <= n - 8; i += 8)
                op.Invoke(Vector256.Load(a + i), Vector256.Load(b + i)).Store(y + i);
        if (Vector128.IsHardwareAccelerated)
            for (; i <= n - 4; i += 4)
                op.Invoke(Vector128.Load(a + i), Vector128.Load(b + i)).Store(y + i);
        for (; i < n; i++)
            y[i] = op.Invoke(a[i], b[i]);
    }

    /// <summary>Sum of x[i]² for i in [0, n), accumulated per lane and folded at the end.</summary>
    public static float SumOfSquares(float* x, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var acc = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var v = Vector512.Load(x + i);
                acc = Vector512.FusedMultiplyAdd(v, v, acc);
            }
            sum += Vector512.Sum(acc);
        }
        if (Vector256.IsHardwareAccelerated && n - i >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8)
            {
                var v = Vector256.Load(x + i);
                acc = Vector256.FusedMultiplyAdd(v, v, acc);
            }
            sum += Vector256.Sum(acc);
        }
        if (Vector128.IsHardwareAccelerated && n - i >= 4)
        {
            var acc = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4)
            {
                var v = Vector128.Load(x + i);
                acc = Vector128.FusedMultiplyAdd(v, v, acc);
            }
            sum += Vector128.Sum(acc);
        }
        for (; i < n; i++)
            sum += x[i] * x[i];
        return sum;
    }

    /// <summary>Largest of x[0..n); n must be at least 1.</summary>
    public static float Max(float* x, int n)
    {
        int i = 0;
        float max = float.NegativeInfinity;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var acc = Vector512.Create(float.NegativeInfinity);
            for (; i <= n - 16; i += 16)
                acc = Vector512.Max(acc, Vector512.Load(x + i));
            max = MathF.Max(max, HorizontalMax(acc.GetLower(), acc.GetUpper()));
        }
        if (Vector256.IsHardwareAccelerated && n - i >= 8)
        {
            var acc = Vector256.Create(float.NegativeInfinity);
            for (; i <= n - 8; i += 8)
                acc = Vector256.Max(acc, Vector256.Load(x + i));
            max = MathF.Max(max, HorizontalMax(Vector128.Max(acc.GetLower(), acc.GetUpper())));
        }
        if (Vector128.IsHardwareAccelerated && n - i >= 4)
        {
            var acc = Vector128.Create(float.NegativeInfinity);
            for (; i <= n - 4; i += 4)
                acc = Vector128.Max(acc, Vector128.Load(x + i));
            max = MathF.Max(max, HorizontalMax(acc));
        }
        for (; i < n; i++)
            max = MathF.Max(max, x[i]);
        return max;
    }

    private static float HorizontalMax(Vector256<float> lower, Vector256<float> upper)
    {
        var m = Vector256.Max(lower, upper);
        return HorizontalMax(Vector128.Max(m.GetLower(), m.GetUpper()));
    }

    private static float HorizontalMax(Vector128<float> v)
        => MathF.Max(MathF.Max(v.GetElement(0), v.GetElement(1)), MathF.Max(v.GetElement(2), v.GetElement(3)));
}

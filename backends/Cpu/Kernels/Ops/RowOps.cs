using System.Runtime.Intrinsics;

namespace PluginEngine.Backends.Cpu.Kernels;

/// <summary>
/// The non-matmul row operations of the forward pass (RMSNorm, softmax, SiLU·mul, add, scale),
/// vectorized through <see cref="VectorDriver"/>. Each call works on one row or a row range, so a caller
/// splits work over threads by handing each thread its own range. Nothing here allocates.
/// </summary>
public static unsafe class RowOps
{
    /// <summary>y = x / sqrt(mean(x²) + eps) * weight, over one row of <paramref name="n"/> floats. y may be x.</summary>
    public static void RmsNorm(float* x, float* weight, float* y, int n, float eps)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), n, "RmsNorm needs a row of at least one element.");
        float meanSquare = VectorDriver.SumOfSquares(x, n) / n;
        float inverseRms = 1f / MathF.Sqrt(meanSquare + eps);
        VectorDriver.Apply(new MultiplyScaledOp(inverseRms), x, weight, y, n);
    }

    /// <summary>
    /// <see cref="RmsNorm(float*, float*, float*, int, float)"/> over rows [rowStart, rowEnd) of a row-major
    /// [rows][n] matrix; y has the same layout and may be x.
    /// </summary>
    public static void RmsNormRows(float* x, float* weight, float* y, int n, int rowStart, int rowEnd, float eps)
    {
        if (rowStart < 0 || rowEnd < rowStart)
            throw new ArgumentOutOfRangeException(nameof(rowStart), $"Row range [{rowStart}, {rowEnd}) is not a valid range.");
        for (int row = rowStart; row < rowEnd; row++)
        {
            long offset = (long)row * n;
            RmsNorm(x + offset, weight, y + offset, n, eps);
        }
    }

    /// <summary>In-place softmax of one row: x = exp(x - max) / sum, with the max subtracted so large logits do not overflow.</summary>
    public static void Softmax(float* x, int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), n, "Softmax needs a row of at least one element.");
        float max = VectorDriver.Max(x, n);
        float sum = ExpShiftedInPlace(x, n, max);
        VectorDriver.Apply(new ScaleOp(1f / sum), x, x, n);
    }

    /// <summary>y = silu(gate) * up = gate / (1 + exp(-gate)) * up (the SwiGLU feed-forward gate). y may alias either input.</summary>
    public static void SiluMul(float* gate, float* up, float* y, int n)
        => VectorDriver.Apply(new SiluMulOp(), gate, up, y, n);

    /// <summary>y = a + b element-wise (the residual connection). y may alias either input.</summary>
    public static void Add(float* a, float* b, float* y, int n)
        => VectorDriver.Apply(new AddOp(), a, b, y, n);

    /// <summary>y = a * b element-wise. y may alias either input.</summary>
    public static void Multiply(float* a, float* b, float* y, int n)
        => VectorDriver.Apply(new MultiplyOp(), a, b, y, n);

    /// <summary>y = x * scale element-wise. y may be x.</summary>
    public static void Scale(float* x, float scale, float* y, int n)
        => VectorDriver.Apply(new ScaleOp(scale), x, y, n);

    /// <summary>x[i] = exp(x[i] - shift) in place; returns the sum of the new values.</summary>
    private static float ExpShiftedInPlace(float* x, int n, float shift)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated && n >= 16)
        {
            var s = Vector512.Create(shift);
            var acc = Vector512<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var e = Vector512.Exp(Vector512.Load(x + i) - s);
                e.Store(x + i);
                acc += e;
            }
            sum += Vector512.Sum(acc);
        }
        if (Vector256.IsHardwareAccelerated && n - i >= 8)
        {
            var s = Vector256.Create(shift);
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8)
            {
                var e = Vector256.Exp(Vector256.Load(x + i) - s);
                e.Store(x + i);
                acc += e;
            }
            sum += Vector256.Sum(acc);
        }
        if (Vector128.IsHardwareAccelerated && n - i >= 4)
        {
            var s = Vector128.Create(shift);
            var acc = Vector128<float>.Zero;
            for (; i <= n - 4; i += 4)
            {
                var e = Vector128.Exp(Vector128.Load(x + i) - s);
                e.Store(x + i);
                acc += e;
            }
            sum += Vector128.Sum(acc);
        }
        for (; i < n; i++)
        {
            float e = MathF.Exp(x[i] - shift);
            x[i] = e;
            sum += e;
        }
        return sum;
    }
}

/// <summary>a + b.</summary>
public readonly struct AddOp : IBinaryFloatOp
{
    public float Invoke(float a, float b) => a + b;
    public Vector128<float> Invoke(Vector128<float> a, Vector128<float> b) => a + b;
    public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b) => a + b;
    public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b) => a + b;
}

/// <summary>a * b.</summary>
public readonly struct MultiplyOp : IBinaryFloatOp
{
    public float Invoke(float a, float b) => a * b;
    public Vector128<float> Invoke(Vector128<float> a, Vector128<float> b) => a * b;
    public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b) => a * b;
    public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b) => a * b;
}

/// <summary>a * scale * b (RMSNorm's final step: normalized value times the weight).</summary>
public readonly struct MultiplyScaledOp(float scale) : IBinaryFloatOp
{
    private readonly float _scale = scale;
    public float Invoke(float a, float b) => a * _scale * b;
    public Vector128<float> Invoke(Vector128<float> a, Vector128<float> b) => a * Vector128.Create(_scale) * b;
    public Vector256<float> Invoke(Vector256<float> a, Vector256<float> b) => a * Vector256.Create(_scale) * b;
    public Vector512<float> Invoke(Vector512<float> a, Vector512<float> b) => a * Vector512.Create(_scale) * b;
}

/// <summary>gate / (1 + exp(-gate)) * up. For very negative gates exp overflows to +inf and the quotient is -0, which is the limit.</summary>
public readonly struct SiluMulOp : IBinaryFloatOp
{
    public float Invoke(float gate, float up) => gate / (1f + MathF.Exp(-gate)) * up;
    public Vector128<float> Invoke(Vector128<float> gate, Vector128<float> up)
        => gate / (Vector128<float>.One + Vector128.Exp(-gate)) * up;
    public Vector256<float> Invoke(Vector256<float> gate, Vector256<float> up)
        => gate / (Vector256<float>.One + Vector256.Exp(-gate)) * up;
    public Vector512<float> Invoke(Vector512<float> gate, Vector512<float> up)
        => gate / (Vector512<float>.One + Vector512.Exp(-gate)) * up;
}

/// <summary>x * scale.</summary>
public readonly struct ScaleOp(float scale) : IUnaryFloatOp
{
    private readonly float _scale = scale;
    public float Invoke(float x) => x * _scale;
    public Vector128<float> Invoke(Vector128<float> x) => x * Vector128.Create(_scale);
    public Vector256<float> Invoke(Vector256<float> x) => x * Vector256.Create(_scale);
    public Vector512<float> Invoke(Vector512<float> x) => x * Vector512.Create(_scale);
}

using PluginEngine.Backends.Gpu;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Cuda.Native;

/// <summary>
/// The part of cuBLAS (libcublas.so.13 / .12) the prompt path uses: one handle per queue, bound to the queue's stream,
/// <c>cublasGemmEx</c> and <c>cublasGemmStridedBatchedEx</c>. Optional: without it the batched matmul runs on the plugin's own kernels, and the probe
/// description says so. Bound through function pointers like <see cref="CudaDriver"/>.
/// </summary>
internal sealed unsafe class Cublas : IGpuBlas
{
    /// <summary>Library names tried, in order (newest first).</summary>
    public static readonly string[] LibraryNames = ["libcublas.so.13", "libcublas.so.12", "libcublas.so", "cublas64_13.dll", "cublas64_12.dll"];

    // cublasOperation_t, cudaDataType_t, cublasComputeType_t, cublasGemmAlgo_t values (cublas_api.h, library_types.h).
    public const int OpN = 0, OpT = 1;
    public const int DataF32 = 0, DataF16 = 2;
    public const int Compute32F = 68;
    public const int GemmDefault = -1;

    private delegate* unmanaged<nint*, int> _create;
    private delegate* unmanaged<nint, int> _destroy;
    private delegate* unmanaged<nint, nint, int> _setStream;
    private delegate* unmanaged<nint, int, int, int, int, int, void*, ulong, int, int, ulong, int, int, void*, ulong, int, int, int, int, int> _gemmEx;
    private delegate* unmanaged<nint, int, int, int, int, int, void*, ulong, int, int, long, ulong, int, int, long, void*, ulong, int, int, long, int, int, int, int> _gemmStridedBatchedEx;

    private Cublas() { }

    /// <summary>Which library file was loaded.</summary>
    public string LibraryName { get; private set; } = "";

    /// <summary>Loads cuBLAS from the usual names, then from <paramref name="extraFolders"/>; null with the reason when absent.</summary>
    public static Cublas? TryLoad(IEnumerable<string> extraFolders, out string? failure)
    {
        var (handle, loaded) = NativeLibraryLoader.TryLoadFirst(LibraryNames, extraFolders);
        if (handle == 0)
        {
            failure = "libcublas.so.13 / libcublas.so.12 not found";
            return null;
        }
        var c = new Cublas { LibraryName = loaded };
        var symbols = new NativeSymbols(handle);
        c._create = (delegate* unmanaged<nint*, int>)symbols.Required("cublasCreate_v2");
        c._destroy = (delegate* unmanaged<nint, int>)symbols.Required("cublasDestroy_v2");
        c._setStream = (delegate* unmanaged<nint, nint, int>)symbols.Required("cublasSetStream_v2");
        c._gemmEx = (delegate* unmanaged<nint, int, int, int, int, int, void*, ulong, int, int, ulong, int, int, void*, ulong, int, int, int, int, int>)symbols.Required("cublasGemmEx");
        c._gemmStridedBatchedEx = (delegate* unmanaged<nint, int, int, int, int, int, void*, ulong, int, int, long, ulong, int, int, long, void*, ulong, int, int, long, int, int, int, int>)
            symbols.Required("cublasGemmStridedBatchedEx");
        if (symbols.Missing is { } missing)
        {
            failure = $"{loaded} {missing}";
            return null;
        }
        failure = null;
        return c;
    }

    /// <summary>A handle whose work goes to <paramref name="stream"/>; the calling thread's current context must be the device's.</summary>
    public nint CreateHandle(nint stream)
    {
        nint h;
        Check(_create(&h), "cublasCreate");
        int r = _setStream(h, stream);
        if (r != 0) { _destroy(h); Check(r, "cublasSetStream"); }
        return h;
    }

    public void DestroyHandle(nint handle) => _destroy(handle);

    /// <summary>
    /// y[t, r] = Σ_c w[r, c] · x[t, c] for row-major w [rows, cols] and x [tokens, cols], y [tokens, rows] in F32: in
    /// cuBLAS's column-major terms y (rows × tokens) = wᵀ (w seen as cols × rows) · x (cols × tokens).
    /// <paramref name="f16"/>: w and x are both F16 (tensor cores, F32 accumulation); else both F32 (FP32).
    /// </summary>
    public void RowMajorMatMul(nint handle, ulong w, ulong x, ulong y, int rows, int cols, int tokens, bool f16, bool accumulate)
    {
        int dataType = f16 ? DataF16 : DataF32;
        float alpha = 1f, beta = accumulate ? 1f : 0f;
        Check(_gemmEx(handle, OpT, OpN, rows, tokens, cols, &alpha, w, dataType, cols, x, dataType, cols, &beta, y, DataF32, rows, Compute32F, GemmDefault),
            $"cublasGemmEx({rows} x {cols} x {tokens})");
    }

    /// <summary>
    /// <paramref name="count"/> products of <see cref="RowMajorMatMul"/>'s shape in one launch, all F16 in and F32 out: product i reads
    /// w + i·<paramref name="wStride"/> and the same x, and writes y + i·<paramref name="yStride"/> (strides in elements).
    /// </summary>
    public void RowMajorMatMulBatched(nint handle, ulong w, long wStride, ulong x, ulong y, long yStride, int rows, int cols, int tokens, int count)
    {
        float alpha = 1f, beta = 0f;
        Check(_gemmStridedBatchedEx(handle, OpT, OpN, rows, tokens, cols, &alpha, w, DataF16, cols, wStride, x, DataF16, cols, 0, &beta, y, DataF32, rows, yStride,
                                    count, Compute32F, GemmDefault),
            $"cublasGemmStridedBatchedEx({count} x {rows} x {cols} x {tokens})");
    }

    private static void Check(int status, string call)
    {
        if (status != 0) throw new GpuException(call, status, StatusName(status));
    }

    /// <summary>cublasStatus_t names (cublas_api.h).</summary>
    public static string StatusName(int status) => status switch
    {
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR",
        _ => $"cublasStatus {status}",
    };
}

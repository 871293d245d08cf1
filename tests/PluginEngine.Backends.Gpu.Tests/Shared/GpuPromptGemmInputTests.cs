using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// Where a prompt's cuBLAS GEMMs get their F16 input, over a recording native layer and a recording BLAS (no GPU): with
/// <c>gemm_input fused</c> rms_norm and silu_mul write it and every GEMM on the same rows reads that one copy; a write to the
/// rows makes the next GEMM convert again; with <c>convert</c> each GEMM converts its own (docs/gpu-kernels.md#prompt-gemm-inputs).
/// What the kernels compute is the conformance kit's (RmsNorm_then_matmul_reads_its_output, MatMulSwiGlu_matches_cpu), on a GPU.
/// </summary>
public sealed unsafe class GpuPromptGemmInputTests : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("pe-gemm-input-").FullName;

    public void Dispose() => Directory.Delete(_cache, true);

    private const int Tokens = 40, Cols = 256, Rows = 128; // 40 tokens: a prompt (cuBLAS from LaunchGeometry.BlasMinTokens)

    /// <summary>A kernel launch: its name and the F16 address it writes (rms_norm, silu_mul: yh; convert_f32_f16: dst; else 0).</summary>
    private sealed record Recorded(string Kernel, ulong F16Out);

    private sealed record Setup(IComputeQueue Queue, BackendBuffer Buffer, List<Recorded> Launches, RecordingGpuNative.RecordingBlas Blas)
    {
        public DeviceTensor F32(int mib) => new(Buffer, (long)mib << 20, GgmlType.F32);
        public DeviceTensor Q4_0(int mib) => new(Buffer, (long)mib << 20, GgmlType.Q4_0);
        public ulong Address(DeviceTensor t) => ((GpuBuffer)t.Buffer).DevicePointer + (ulong)t.Offset;
        public string[] Kernels => [.. Launches.Select(l => l.Kernel)];
    }

    private Setup Make(bool fused, bool batch = false)
    {
        var blas = new RecordingGpuNative.RecordingBlas();
        var (device, native) = RecordingGpuNative.Device("gpu", [], peers: false, 0x1000_0000, _cache,
                                                         GpuKernelOptions.Default with { GemmInputFused = fused, GemmBatch = batch }, blas: blas);
        var launches = new List<Recorded>();
        native.OnLaunch = (kernel, launch, args) => launches.Add(new Recorded(kernel, kernel switch
        {
            "rms_norm" => *(ulong*)args[7],
            "silu_mul" => *(ulong*)args[6],
            "convert_f32_f16" => *(ulong*)args[1],
            _ when kernel.StartsWith("attention_mma_", StringComparison.Ordinal) => *(ulong*)args[9],
            _ when kernel.StartsWith("dequantize_f16_", StringComparison.Ordinal) => *(ulong*)args[4],
            _ => 0,
        }));
        return new Setup(device.CreateQueue()!, device.Buffers.AllocateOwned("everything", 64 << 20), launches, blas);
    }

    [Fact]
    public void Fused_q_k_and_v_read_the_f16_rows_rms_norm_wrote_and_nothing_converts()
    {
        var s = Make(fused: true);
        DeviceTensor x = s.F32(0), xb = s.F32(1), norm = s.F32(2);
        s.Queue.RmsNorm(x, norm, xb, Tokens, Cols, 1e-5f);
        s.Queue.MatMulShared(xb, Cols, Tokens, [new MatMulTarget(s.Q4_0(3), Rows, s.F32(8)), new MatMulTarget(s.Q4_0(4), Rows, s.F32(9)),
                                                new MatMulTarget(s.Q4_0(5), Rows, s.F32(10))]);

        Assert.Equal(["rms_norm", "dequantize_f16_q4_0", "dequantize_f16_q4_0", "dequantize_f16_q4_0"], s.Kernels);
        ulong f16 = s.Launches[0].F16Out;
        Assert.NotEqual(0UL, f16);
        Assert.Equal([(f16, s.Address(s.F32(8))), (f16, s.Address(s.F32(9))), (f16, s.Address(s.F32(10)))], s.Blas.Gemms.Select(g => (g.X, g.Y)));
        Assert.All(s.Blas.Gemms, g => Assert.Equal((Rows, Cols, Tokens, true, false), (g.Rows, g.Cols, g.Tokens, g.F16, g.Accumulate)));
    }

    [Fact]
    public void Fused_a_write_to_the_rows_makes_the_next_gemm_convert_them_again()
    {
        var s = Make(fused: true);
        DeviceTensor x = s.F32(0), xb = s.F32(1), norm = s.F32(2);
        s.Queue.RmsNorm(x, norm, xb, Tokens, Cols, 1e-5f);
        s.Queue.MatMul(s.Q4_0(3), Rows, Cols, xb, s.F32(8), Tokens);
        s.Queue.Add(x, x, xb, (long)Tokens * Cols);                    // xb changes: its F16 copy is stale
        s.Queue.MatMul(s.Q4_0(4), Rows, Cols, xb, s.F32(9), Tokens);
        s.Queue.MatMul(s.Q4_0(5), Rows, Cols, s.F32(8), xb, tokens: 1); // a decode mat-vec writes over xb's first row
        s.Queue.MatMul(s.Q4_0(6), Rows, Cols, xb, s.F32(9), Tokens);

        Assert.Equal(["rms_norm", "dequantize_f16_q4_0", "add", "dequantize_f16_q4_0", "convert_f32_f16", "quantize_x_q8", "matvec_q8_q4_0",
                      "dequantize_f16_q4_0", "convert_f32_f16"], s.Kernels);
        Assert.All(s.Blas.Gemms, g => Assert.Equal(s.Launches[0].F16Out, g.X)); // one F16 scratch, rewritten each time
        Assert.All(s.Blas.Gemms, g => Assert.Equal(s.Launches[1].F16Out, g.W));  // and one F16 weight scratch
    }

    [Fact]
    public void Fused_the_down_projection_reads_the_f16_rows_silu_mul_wrote()
    {
        var s = Make(fused: true);
        DeviceTensor xb = s.F32(1), gate = s.F32(8), up = s.F32(9), y = s.F32(10), scratch = s.F32(11);
        s.Queue.MatMulSwiGlu(s.Q4_0(3), s.Q4_0(4), Rows, Cols, xb, gate, up, Tokens);
        s.Queue.MatMulAdd(s.Q4_0(5), Cols, Rows, gate, y, Tokens, scratch);

        Assert.Equal(["dequantize_f16_q4_0", "convert_f32_f16", "dequantize_f16_q4_0", "silu_mul", "dequantize_f16_q4_0"], s.Kernels);
        ulong xbF16 = s.Launches[1].F16Out, gateF16 = s.Launches[3].F16Out;
        Assert.NotEqual(0UL, gateF16);
        Assert.Equal([(xbF16, s.Address(gate), false), (xbF16, s.Address(up), false), (gateF16, s.Address(y), true)],
                     s.Blas.Gemms.Select(g => (g.X, g.Y, g.Accumulate)));
    }

    [Fact]
    public void Fused_the_output_projection_reads_the_f16_rows_the_prompt_attention_wrote()
    {
        var s = Make(fused: true);
        DeviceTensor q = s.F32(1), att = s.F32(8), y = s.F32(9), scratch = s.F32(10);
        var kCache = new DeviceTensor(s.Buffer, 16L << 20, GgmlType.F16);
        var vCache = new DeviceTensor(s.Buffer, 20L << 20, GgmlType.F16);
        s.Queue.Attention(q, kCache, vCache, att, new AttentionParams(Tokens, 0, 4, 2, 64, 0.125f)); // 4 heads of 64: rows of 256
        s.Queue.MatMulAdd(s.Q4_0(3), Rows, Cols, att, y, Tokens, scratch);

        Assert.Equal(["attention_mma_f16_d64", "dequantize_f16_q4_0"], s.Kernels);
        Assert.NotEqual(0UL, s.Launches[0].F16Out);
        Assert.Equal([(s.Launches[0].F16Out, s.Address(y), true)], s.Blas.Gemms.Select(g => (g.X, g.Y, g.Accumulate)));
    }

    [Fact]
    public void Convert_each_gemm_converts_its_input_and_the_producers_write_no_f16()
    {
        var s = Make(fused: false);
        DeviceTensor x = s.F32(0), xb = s.F32(1), norm = s.F32(2), gate = s.F32(8), up = s.F32(9);
        s.Queue.RmsNorm(x, norm, xb, Tokens, Cols, 1e-5f);
        s.Queue.MatMulSwiGlu(s.Q4_0(3), s.Q4_0(4), Rows, Cols, xb, gate, up, Tokens);
        s.Queue.Attention(s.F32(10), new DeviceTensor(s.Buffer, 16L << 20, GgmlType.F16), new DeviceTensor(s.Buffer, 20L << 20, GgmlType.F16), s.F32(11),
                          new AttentionParams(Tokens, 0, 4, 2, 64, 0.125f));

        Assert.Equal(["rms_norm", "dequantize_f16_q4_0", "convert_f32_f16", "dequantize_f16_q4_0", "convert_f32_f16", "silu_mul", "attention_mma_f16_d64"], s.Kernels);
        Assert.Equal(0UL, s.Launches[0].F16Out);
        Assert.Equal(0UL, s.Launches[5].F16Out);
        Assert.Equal(0UL, s.Launches[6].F16Out);
    }

    [Fact]
    public void Gemm_batch_takes_equal_targets_with_equally_spaced_outputs_in_one_strided_gemm()
    {
        var s = Make(fused: true, batch: true);
        DeviceTensor xb = s.F32(1);
        // q [40, 128] and then k and v of another shape (grouped-query attention), k and v outputs 1 MiB apart.
        s.Queue.MatMulShared(xb, Cols, Tokens, [new MatMulTarget(s.Q4_0(3), Rows, s.F32(8)), new MatMulTarget(s.Q4_0(4), Rows / 2, s.F32(9)),
                                                new MatMulTarget(s.Q4_0(5), Rows / 2, s.F32(10))]);
        // gate and up: same shape, outputs 1 MiB apart; then two whose outputs overlap (spaced closer than one output).
        s.Queue.MatMulShared(xb, Cols, Tokens, [new MatMulTarget(s.Q4_0(3), Rows, s.F32(11)), new MatMulTarget(s.Q4_0(4), Rows, s.F32(12))]);
        var overlapping = new DeviceTensor(s.Buffer, (13L << 20) + 64, GgmlType.F32);
        s.Queue.MatMulShared(xb, Cols, Tokens, [new MatMulTarget(s.Q4_0(3), Rows, s.F32(13)), new MatMulTarget(s.Q4_0(4), Rows, overlapping)]);

        Assert.Equal(["dequantize_f16_q4_0", "convert_f32_f16", "dequantize_f16_q4_0", "dequantize_f16_q4_0",   // q alone, then k and v
                      "dequantize_f16_q4_0", "dequantize_f16_q4_0",                                            // gate and up
                      "dequantize_f16_q4_0", "dequantize_f16_q4_0"], s.Kernels);                               // one each
        ulong weights = s.Launches[0].F16Out, xh = s.Launches[1].F16Out;
        Assert.Equal([weights, weights + Rows / 2 * Cols * 2, weights, weights + Rows * Cols * 2], new[] { 2, 3, 4, 5 }.Select(i => s.Launches[i].F16Out));
        Assert.Equal([(s.Address(s.F32(9)), Rows / 2, 2, (long)Rows / 2 * Cols, (1L << 20) / 4), (s.Address(s.F32(11)), Rows, 2, (long)Rows * Cols, (1L << 20) / 4)],
                     s.Blas.Batches.Select(b => (b.Y, b.Rows, b.Count, b.WStride, b.YStride)));
        Assert.All(s.Blas.Batches, b => Assert.Equal((weights, xh, Cols, Tokens), (b.W, b.X, b.Cols, b.Tokens)));
        Assert.Equal([s.Address(s.F32(8)), s.Address(s.F32(13)), s.Address(overlapping)], s.Blas.Gemms.Select(g => g.Y));
    }
}

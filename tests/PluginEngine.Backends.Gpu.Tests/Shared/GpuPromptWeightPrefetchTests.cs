using System.Text.RegularExpressions;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>
/// Option gemm_prefetch over a recording native layer and BLAS (no GPU): once the queue has seen a prompt's GEMMs in order, each
/// GEMM's F16 weights are dequantized on a second stream while the GEMM before it runs, into the other of two buffers, with
/// events ordering the streams (docs/gpu-kernels.md#prompt-gemm-inputs). The trace names streams S1 (the queue's) and S2, events
/// E1.., weights W1.. and F16 buffers B1.. in the order they first appear.
/// </summary>
public sealed partial class GpuPromptWeightPrefetchTests : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("pe-gemm-prefetch-").FullName;

    public void Dispose() => Directory.Delete(_cache, true);

    private const int Tokens = 40, Cols = 256, Rows = 128;

    private sealed record Setup(IComputeQueue Queue, BackendBuffer Buffer, List<string> Trace)
    {
        public DeviceTensor At(int mib, GgmlType type) => new(Buffer, (long)mib << 20, type);

        /// <summary>One "prompt step": three matmuls on the same input (weights at 3, 4, 5 MiB), then the step's synchronization.</summary>
        public void Step()
        {
            foreach (int w in new[] { 3, 4, 5 }) Queue.MatMul(At(w, GgmlType.Q4_0), Rows, Cols, At(1, GgmlType.F32), At(5 + w, GgmlType.F32), Tokens);
            Queue.Synchronize();
        }
    }

    private Setup Make()
    {
        var blas = new RecordingGpuNative.RecordingBlas();
        var (device, native) = RecordingGpuNative.Device("gpu", [], peers: false, 0x1000_0000, _cache,
                                                         GpuKernelOptions.Default with { GemmInputFused = true, GemmPrefetch = true }, blas: blas);
        var trace = new List<string>();
        (native.Trace, blas.Trace) = (trace, trace);
        return new Setup(device.CreateQueue()!, device.Buffers.AllocateOwned("everything", 64 << 20), trace);
    }

    /// <summary>Streams, events, weights and buffers renamed S1.., E1.., W1.., B1.. in order of first appearance.</summary>
    private static string[] Canonical(IEnumerable<string> trace)
    {
        var names = new Dictionary<string, string>();
        string Name(string raw, string prefix)
        {
            if (!names.TryGetValue(raw, out var n)) names[raw] = n = prefix + (names.Keys.Count(k => k[0] == raw[0]) + 1);
            return n;
        }
        return [.. trace.Select(line => Token().Replace(line, m => m.Value[0] switch
        {
            's' => Name(m.Value, "S"),
            'e' => Name(m.Value, "E"),
            'w' => Name(m.Value, "W"),
            _ => Name(m.Value, "B"),
        }))];
    }

    [GeneratedRegex(@"\b(s\d+|e\d+|w0x[0-9A-F]+|0x[0-9A-F]+)\b")]
    private static partial Regex Token();

    [Fact]
    public void After_one_step_each_gemms_weights_are_dequantized_on_the_second_stream_while_the_gemm_before_runs()
    {
        var s = Make();
        s.Step();
        s.Step();
        s.Step();
        const string D = "dequantize_f16_q4_0";
        Assert.Equal([
            // Step 1: nothing learnt yet, each unit in line on the queue's stream (S1), alternating between the two buffers.
            $"{D} W1 -> B1 on S1", "convert_f32_f16 on S1", "gemm B1", "record E1 on S1",
            $"{D} W2 -> B2 on S1", "gemm B2", "record E2 on S1",
            $"{D} W3 -> B1 on S1", "gemm B1", "record E1 on S1",
            "sync S1", "sync S2",
            // Step 2: W1 in line (after W3 nothing was known); from then on the next unit is dequantized on S2 once the GEMM that
            // read its buffer is done (E1, E2: "free"), and the GEMM waits for it (E3, E4: "ready").
            $"{D} W1 -> B2 on S1", "S2 waits E1", $"{D} W2 -> B1 on S2", "record E3 on S2", "gemm B2", "record E2 on S1",
            "S1 waits E3", "S2 waits E2", $"{D} W3 -> B2 on S2", "record E4 on S2", "gemm B1", "record E1 on S1",
            "S1 waits E4", "S2 waits E1", $"{D} W1 -> B1 on S2", "record E3 on S2", "gemm B2", "record E2 on S1",
            "sync S1", "sync S2",
            // Step 3: the first unit was dequantized ahead at the end of step 2; the queue's stream dequantizes nothing.
            "S1 waits E3", "S2 waits E2", $"{D} W2 -> B2 on S2", "record E4 on S2", "gemm B1", "record E1 on S1",
            "S1 waits E4", "S2 waits E1", $"{D} W3 -> B1 on S2", "record E3 on S2", "gemm B2", "record E2 on S1",
            "S1 waits E3", "S2 waits E2", $"{D} W1 -> B2 on S2", "record E4 on S2", "gemm B1", "record E1 on S1",
            "sync S1", "sync S2",
        ], Canonical(s.Trace));
    }

    [Fact]
    public void A_unit_other_than_the_one_expected_is_dequantized_in_line_into_the_buffer_the_second_stream_is_not_writing()
    {
        var s = Make();
        s.Step();
        s.Step();
        int from = s.Trace.Count;
        // W1 (3 MiB) is being dequantized ahead into B1 (step 2's end); the prompt asks for W3 (5 MiB) again instead.
        s.Queue.MatMul(s.At(5, GgmlType.Q4_0), Rows, Cols, s.At(1, GgmlType.F32), s.At(10, GgmlType.F32), Tokens);
        string[] all = Canonical(s.Trace);
        Assert.Equal("dequantize_f16_q4_0 W1 -> B1 on S2", all[from - 6]);
        // In line into B2; W3 now follows W3, so W3 is also dequantized ahead, into B1 after the abandoned W1 (stream order) and
        // after the GEMM that read B1 last (E1).
        Assert.Equal(["dequantize_f16_q4_0 W3 -> B2 on S1", "S2 waits E1", "dequantize_f16_q4_0 W3 -> B1 on S2", "record E3 on S2",
                      "gemm B2", "record E2 on S1"], all[from..]);
    }
}

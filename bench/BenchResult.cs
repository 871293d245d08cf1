namespace PluginEngine.Bench;

/// <summary>
/// One row of bench output: one test on one configuration. Property names map to the output columns in snake case
/// (<see cref="BenchOutput.JsonOptions"/>); where llama-bench has a column with the same meaning, the name is
/// llama-bench's (model_filename, n_threads, avg_ts, …). docs/benchmarks.md explains every column.
/// The llama.cpp reference program writes rows of this same type, so its JSONL merges without translation.
/// </summary>
public sealed class BenchResult
{
    // --- machine (repeated in every row so csv/jsonl rows stand alone, as llama-bench's do) ---
    /// <summary>CPU model name.</summary>
    public string CpuInfo { get; set; } = "";
    /// <summary>SIMD instruction sets the runtime can use (e.g. "AVX2 AVX512F").</summary>
    public string CpuIsa { get; set; } = "";
    /// <summary>Logical processors.</summary>
    public int NCores { get; set; }
    /// <summary>Operating system description.</summary>
    public string Os { get; set; } = "";
    /// <summary>.NET runtime description.</summary>
    public string Runtime { get; set; } = "";

    // --- model ---
    /// <summary>The model file benchmarked.</summary>
    public string ModelFilename { get; set; } = "";
    /// <summary>What the user asked for: the file name, "synthetic:tinyllama:Q4_0", or "demo".</summary>
    public string ModelLabel { get; set; } = "";
    /// <summary>"llama 1.1B Q4_0"-style description: architecture, parameter count, file type.</summary>
    public string ModelType { get; set; } = "";
    /// <summary>Bytes of tensor data.</summary>
    public long ModelSize { get; set; }
    /// <summary>Parameters (tensor elements).</summary>
    public long ModelNParams { get; set; }

    // --- configuration ---
    /// <summary>Backend the layers were offloaded to ("cpu", "cuda", …; "llama.cpp" for reference rows).</summary>
    public string Backends { get; set; } = "";
    /// <summary>Name of that backend's device.</summary>
    public string Device { get; set; } = "";
    /// <summary>The device's details as the plugin reports them.</summary>
    public string DeviceDetails { get; set; } = "";
    /// <summary>CPU threads.</summary>
    public int NThreads { get; set; }
    /// <summary>Logical batch: prompt tokens per evaluate call.</summary>
    public int NBatch { get; set; }
    /// <summary>Physical batch: tokens per forward pass.</summary>
    public int NUbatch { get; set; }
    /// <summary>Layers on the backend (-1 = all).</summary>
    public int NGpuLayers { get; set; }
    /// <summary>True when the model file is memory-mapped (memory_mode file).</summary>
    public bool UseMmap { get; set; }
    /// <summary>Where the file's bytes live in host memory: file, hugepages, anonymous or heap.</summary>
    public string MemoryMode { get; set; } = "";
    /// <summary>The host-import switch: auto, on or off.</summary>
    public string HostImport { get; set; } = "";
    /// <summary>KV cache element type, for K and V alike: f16 (the default), f32, q8_0 or q4_0 (llama-bench's type_k/type_v values).</summary>
    public string TypeKv { get; set; } = "f16";

    // --- test ---
    /// <summary>Test name: pp512, tg128, pp512+tg128, with " @ dN" for a depth.</summary>
    public string Test { get; set; } = "";
    /// <summary>Prompt tokens.</summary>
    public int NPrompt { get; set; }
    /// <summary>Generated tokens.</summary>
    public int NGen { get; set; }
    /// <summary>Tokens in the KV cache before the timed part.</summary>
    public int NDepth { get; set; }
    /// <summary>When the test started (UTC, ISO 8601).</summary>
    public string TestTime { get; set; } = "";
    /// <summary>Timed repetitions (after one warm-up).</summary>
    public int Repetitions { get; set; }

    // --- timings ---
    /// <summary>Mean duration of a repetition (ns).</summary>
    public long AvgNs { get; set; }
    /// <summary>Standard deviation of the durations (ns).</summary>
    public long StddevNs { get; set; }
    /// <summary>Mean tokens per second.</summary>
    public double AvgTs { get; set; }
    /// <summary>Standard deviation of tokens per second.</summary>
    public double StddevTs { get; set; }
    /// <summary>Every repetition's duration (ns).</summary>
    public long[] SamplesNs { get; set; } = [];
    /// <summary>Every repetition's tokens per second.</summary>
    public double[] SamplesTs { get; set; } = [];

    // --- memory and load ---
    /// <summary>Model load time (ms): parse, plan, map, upload or import.</summary>
    public double LoadMs { get; set; }
    /// <summary>Bytes of weight buffers the backends allocated (owned); null where not measured (reference rows).</summary>
    public long? WeightsOwnedBytes { get; set; }
    /// <summary>Bytes of weight buffers that use the host mapping in place (imported).</summary>
    public long? WeightsImportedBytes { get; set; }
    /// <summary>Bytes of the host mapping kept after loading (0 when every tensor was copied out and it was released).</summary>
    public long? HostMappedBytes { get; set; }
    /// <summary>
    /// Imported bytes on devices that do not read host memory in place: host pages a device registered (pinned) to read
    /// them over the bus. 0 when only in-place readers (the CPU) import.
    /// </summary>
    public long? HostRegisteredBytes { get; set; }
    /// <summary>Free 2 MiB huge pages before the model was loaded (null: no pool on this system).</summary>
    public long? HugepagesBefore { get; set; }
    /// <summary>Free 2 MiB huge pages with the model loaded (null: no pool on this system).</summary>
    public long? HugepagesAfter { get; set; }
    /// <summary>Bytes the test's context allocated on its devices (KV cache + activations).</summary>
    public long? ContextBytes { get; set; }
    /// <summary>
    /// Device memory this process holds on its accelerators at the end of the test: how far their free memory fell since
    /// before the model loaded (weights, any copies a backend made of them such as CUDA's tiled Q4_0 matrices, the
    /// context, scratch, the runtime's own). Null where no device but the CPU ran (and reference rows).
    /// </summary>
    public long? DeviceUsedBytes { get; set; }
    /// <summary>The memory columns per device, one entry per device in use (null where not measured: reference rows).</summary>
    public BenchDeviceMemory[]? DeviceMemory { get; set; }
    /// <summary>Resident set size of the process after the test.</summary>
    public long ProcessRssBytes { get; set; }
    /// <summary>Activation copies between devices during the test (partial offload, op fallback).</summary>
    public long? DeviceCopies { get; set; }
    /// <summary>none or layer (docs/multi-gpu.md#flags).</summary>
    public string SplitMode { get; set; } = "layer";
    /// <summary>Proportions as llama-bench writes them ("3/1"); "" for the default (by free memory).</summary>
    public string TensorSplit { get; set; } = "";
    /// <summary>Devices other than the CPU that ran layers or the output (the CPU itself in a CPU-only run).</summary>
    public int SplitDevices { get; set; } = 1;
    /// <summary>Activation copies per repetition per device pair, "from>to=N" separated by spaces, "(direct N)" for device-to-device copies; "" when none.</summary>
    public string DeviceTransfers { get; set; } = "";

    // --- comparison ---
    /// <summary>avg_ts divided by the matching llama.cpp reference row's avg_ts (null when there is none).</summary>
    public double? RatioVsLlamacpp { get; set; }

    /// <summary>Sequences decoded together (concurrent-decode tests; 0 for the single-sequence tests).</summary>
    public int NSequences { get; set; }
    /// <summary>avg_ts divided by the sequences (the rate each sequence sees; equals avg_ts for single-sequence tests).</summary>
    public double AvgTsPerSequence { get; set; }

    /// <summary>Copies the timing columns from <paramref name="measurement"/>.</summary>
    public void SetTimings(BenchMeasurement measurement)
    {
        ArgumentNullException.ThrowIfNull(measurement);
        var ns = measurement.Nanoseconds;
        var ts = measurement.TokensPerSecond;
        Repetitions = measurement.SamplesNs.Count;
        AvgNs = (long)Math.Round(ns.Mean);
        StddevNs = (long)Math.Round(ns.StandardDeviation);
        AvgTs = ts.Mean;
        StddevTs = ts.StandardDeviation;
        SamplesNs = measurement.SamplesNs.ToArray();
        SamplesTs = measurement.SamplesTokensPerSecond.ToArray();
        AvgTsPerSequence = AvgTs / Math.Max(measurement.Test.Sequences, 1);
    }

    /// <summary>Sets the test columns from <paramref name="test"/>.</summary>
    public void SetTest(BenchTest test)
    {
        ArgumentNullException.ThrowIfNull(test);
        Test = test.Name;
        NPrompt = test.PromptTokens;
        NGen = test.GeneratedTokens;
        NDepth = test.Depth;
        NSequences = test.Sequences;
    }

    /// <summary>Sets the machine columns from <paramref name="machine"/>.</summary>
    public void SetMachine(MachineInfo machine)
    {
        ArgumentNullException.ThrowIfNull(machine);
        CpuInfo = machine.CpuModel;
        CpuIsa = machine.Isa;
        NCores = machine.LogicalCores;
        Os = machine.OperatingSystem;
        Runtime = machine.Runtime;
    }

    /// <summary>A shallow copy (the sample arrays are shared).</summary>
    public BenchResult Clone() => (BenchResult)MemberwiseClone();
}

/// <summary>One device's share of a row's memory (the <c>device_memory</c> column).</summary>
public sealed class BenchDeviceMemory
{
    /// <summary>The device's backend name ("cuda", "cpu", …).</summary>
    public string Device { get; set; } = "";
    /// <summary>Weight buffers this device allocated (owned).</summary>
    public long WeightsOwnedBytes { get; set; }
    /// <summary>Weight buffers of this device that use the host mapping in place (imported).</summary>
    public long WeightsImportedBytes { get; set; }
    /// <summary>Activations and KV cache the test's context allocated on this device.</summary>
    public long ContextBytes { get; set; }
    /// <summary>The fall of this device's free memory since before the model loaded (0 for the CPU: see BenchResult.DeviceUsedBytes).</summary>
    public long DeviceUsedBytes { get; set; }
}

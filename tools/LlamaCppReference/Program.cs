using System.Diagnostics;
using System.Globalization;
using LLama;
using LLama.Common;
using LLama.Native;
using PluginEngine.Bench;
using PluginEngine.Core.Gguf;

namespace PluginEngine.Tools.LlamaCppReference;

/// <summary>
/// <c>LlamaCppReference --model FILE --threads N --batch B --ubatch U --repetitions R --test P,N,D [--test …] [--type-kv f16|f32|q8_0|q4_0] [--label L] [--verbose]</c>:
/// runs bench tests on llama.cpp (LLamaSharp's CPU build, all layers on the CPU, model memory-mapped) with the same token ids
/// (<see cref="BenchTokens"/>), warm-up and repetition scheme as <c>pluginengine bench</c>, and prints one JSONL
/// <see cref="BenchResult"/> per test on stdout with <c>backends = "llama.cpp"</c>. Errors go to stderr with exit code 2
/// (bad arguments) or 1 (llama.cpp failed).
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        ReferenceArguments parsed;
        try
        {
            parsed = ReferenceArguments.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine(ReferenceArguments.Usage);
            return 2;
        }

        try
        {
            foreach (var row in Run(parsed)) BenchOutput.WriteJsonLine(Console.Out, row);
            return 0;
        }
        catch (Exception e) when (e is LLama.Exceptions.RuntimeError or GgufFormatException or IOException or InvalidOperationException)
        {
            Console.Error.WriteLine($"error: {e.GetType().Name}: {e.Message}");
            return 1;
        }
    }

    private static IEnumerable<BenchResult> Run(ReferenceArguments a)
    {
        // llama.cpp logs every load step to stderr; keep it for --verbose only (the host shows stderr when this program fails).
        NativeLibraryConfig.All.WithLogCallback((level, message) => { if (a.Verbose) Console.Error.Write(message); });

        var facts = BenchModelFacts.From(GgufReader.Read(a.ModelPath));
        var machine = MachineInfo.Current();
        var parameters = new ModelParams(a.ModelPath)
        {
            ContextSize = (uint)a.Tests.Max(t => t.ContextTokens),
            BatchSize = (uint)a.Batch,
            UBatchSize = (uint)Math.Min(a.Batch, a.MicroBatch),
            Threads = a.Threads,
            BatchThreads = a.Threads,
            GpuLayerCount = 0,
            TypeK = a.TypeKv, TypeV = a.TypeKv,
        };
        var clock = Stopwatch.StartNew();
        using var weights = LLamaWeights.LoadFromFile(parameters);
        double loadMs = clock.Elapsed.TotalMilliseconds;
        int vocabulary = weights.Vocab.Count;
        int bos = weights.Vocab.BOS is { } b ? (int)b : -1;

        foreach (var test in a.Tests)
        {
            // One context per test, sized for it, like llama-bench.
            parameters.ContextSize = (uint)test.ContextTokens;
            using var context = weights.CreateContext(parameters);
            int[] ids = BenchTokens.Create(test.ContextTokens, vocabulary, bos);
            var batch = new LLamaBatch();
            string started = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);

            RunOnce(context, batch, test, ids, a.Batch); // warm-up
            var samples = new long[a.Repetitions];
            for (int r = 0; r < samples.Length; r++) samples[r] = RunOnce(context, batch, test, ids, a.Batch);

            var row = new BenchResult
            {
                ModelFilename = Path.GetFullPath(a.ModelPath), ModelLabel = a.Label ?? Path.GetFileName(a.ModelPath),
                ModelType = facts.ModelType, ModelSize = facts.SizeBytes, ModelNParams = facts.Parameters,
                Backends = PluginEngine.Bench.LlamaCppReference.Backend, Device = "llama.cpp CPU", DeviceDetails = $"LLamaSharp {LlamaSharpVersion()}, ggml CPU backend",
                NThreads = a.Threads, NBatch = a.Batch, NUbatch = a.MicroBatch, NGpuLayers = 0,
                UseMmap = true, MemoryMode = "file", HostImport = "off", TestTime = started, LoadMs = loadMs, TypeKv = a.TypeKvName,
                ProcessRssBytes = ProcessMemory.ResidentBytes(),
            };
            row.SetMachine(machine);
            row.SetTest(test);
            row.SetTimings(new BenchMeasurement(test, samples));
            yield return row;
        }
    }

    /// <summary>The LLamaSharp package version this program references (stamped into its assembly by the project file).</summary>
    private static string LlamaSharpVersion()
        => typeof(Program).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
            .OfType<System.Reflection.AssemblyMetadataAttribute>().FirstOrDefault(m => m.Key == "LLamaSharpVersion")?.Value ?? "?";

    /// <summary>One repetition, as BenchRunner does it: clear, depth untimed, then time the prompt in n_batch chunks and the generated tokens one by one.</summary>
    private static long RunOnce(LLamaContext context, LLamaBatch batch, BenchTest test, int[] ids, int batchSize)
    {
        context.NativeHandle.MemoryClear(true);
        if (test.Depth > 0) Decode(context, batch, ids, 0, test.Depth, batchSize);
        long start = Stopwatch.GetTimestamp();
        if (test.PromptTokens > 0) Decode(context, batch, ids, test.Depth, test.PromptTokens, batchSize);
        int first = test.Depth + test.PromptTokens;
        for (int i = 0; i < test.GeneratedTokens; i++) Decode(context, batch, ids, first + i, 1, 1);
        long elapsed = Stopwatch.GetTimestamp() - start;
        return (long)(elapsed * (1e9 / Stopwatch.Frequency));
    }

    /// <summary>Decodes ids[start, start+count) at positions start.. in chunks of <paramref name="batchSize"/>; logits for each chunk's last token.</summary>
    private static void Decode(LLamaContext context, LLamaBatch batch, int[] ids, int start, int count, int batchSize)
    {
        for (int chunk = start; chunk < start + count; chunk += batchSize)
        {
            int n = Math.Min(batchSize, start + count - chunk);
            batch.Clear();
            for (int i = 0; i < n; i++) batch.Add(ids[chunk + i], chunk + i, LLamaSeqId.Zero, i == n - 1);
            var result = context.NativeHandle.Decode(batch);
            if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode failed with {result} at position {chunk} ({n} tokens)");
            context.NativeHandle.Synchronize();
        }
    }
}

/// <summary>The reference program's command line.</summary>
internal sealed record ReferenceArguments(string ModelPath, string? Label, int Threads, int Batch, int MicroBatch, int Repetitions, IReadOnlyList<BenchTest> Tests, bool Verbose,
                                          string TypeKvName = "f16")
{
    public const string Usage = "usage: LlamaCppReference --model FILE --threads N --batch B --ubatch U --repetitions R --test P,N,D [--test P,N,D …] [--type-kv f16|f32|q8_0|q4_0] [--label TEXT] [--verbose]";

    /// <summary>llama.cpp's type for <see cref="TypeKvName"/> (K and V alike; a quantized V cache takes llama.cpp's flash attention, on by default where supported).</summary>
    public GGMLType TypeKv => TypeKvName switch
    {
        "f32" => GGMLType.GGML_TYPE_F32,
        "q8_0" => GGMLType.GGML_TYPE_Q8_0,
        "q4_0" => GGMLType.GGML_TYPE_Q4_0,
        _ => GGMLType.GGML_TYPE_F16,
    };

    public static ReferenceArguments Parse(string[] args)
    {
        string? model = null, label = null;
        int threads = Environment.ProcessorCount, batch = 2048, ubatch = 512, repetitions = 5;
        bool verbose = false;
        string typeKv = "f16";
        var tests = new List<BenchTest>();
        for (int i = 0; i < args.Length; i++)
        {
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--model": model = Value(); break;
                case "--label": label = Value(); break;
                case "--threads": threads = Positive("--threads", Value()); break;
                case "--batch": batch = Positive("--batch", Value()); break;
                case "--ubatch": ubatch = Positive("--ubatch", Value()); break;
                case "--repetitions": repetitions = Positive("--repetitions", Value()); break;
                case "--test": tests.Add(Test(Value())); break;
                case "--verbose": verbose = true; break;
                case "--type-kv":
                    typeKv = Value().ToLowerInvariant();
                    if (typeKv is not ("f16" or "f32" or "q8_0" or "q4_0")) throw new ArgumentException($"--type-kv {typeKv}: expected f16, f32, q8_0 or q4_0");
                    break;
                default: throw new ArgumentException($"unknown argument '{args[i]}'");
            }
        }
        if (model is null) throw new ArgumentException("--model is required");
        if (!File.Exists(model)) throw new ArgumentException($"--model {model}: file not found");
        if (tests.Count == 0) throw new ArgumentException("at least one --test P,N,D is required");
        return new ReferenceArguments(model, label, threads, batch, ubatch, repetitions, tests, verbose, typeKv);
    }

    private static int Positive(string option, string text)
        => int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : throw new ArgumentException($"{option} {text}: expected a positive integer");

    private static BenchTest Test(string text)
    {
        var parts = text.Split(',');
        if (parts.Length != 3 || !parts.All(p => int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out _)))
            throw new ArgumentException($"--test {text}: expected P,N,D (prompt tokens, generated tokens, depth), e.g. 512,0,0");
        var test = new BenchTest(int.Parse(parts[0], CultureInfo.InvariantCulture), int.Parse(parts[1], CultureInfo.InvariantCulture), int.Parse(parts[2], CultureInfo.InvariantCulture));
        if (test.TimedTokens == 0) throw new ArgumentException($"--test {text}: needs prompt or generated tokens");
        return test;
    }
}

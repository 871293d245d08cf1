using System.CommandLine;
using System.Globalization;
using PluginEngine.Abstractions;
using PluginEngine.Bench;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Plugins;
using Spectre.Console;

namespace PluginEngine.Host.Commands;

/// <summary>
/// <c>pluginengine bench</c>: a llama-bench equivalent. Every parameter takes a comma list (or repeats) and the lists run
/// as a cartesian product; one row per configuration and test, with tokens/s as mean ± sd over <c>-r</c> repetitions,
/// memory and load columns, and optionally llama.cpp reference rows (<c>--reference llamacpp</c>).
/// The work is <see cref="BenchSession"/>'s; this class parses, validates and prints. csv and jsonl rows are written (and
/// flushed) as each test finishes; the first SIGINT (Ctrl+C) or SIGTERM stops the run after the current evaluation, prints
/// the rows measured so far in the chosen format and exits with 128 + the signal number (a second signal kills at once).
/// </summary>
public static class BenchCommand
{
    public static Command Create(CliContext context)
    {
        var models = new Option<string[]>("--model", "-m") { Description = "GGUF files, or synthetic:SHAPE:TYPE (default: the demo model)", HelpName = "FILE[,FILE]", AllowMultipleArgumentsPerToken = false };
        var synthetic = new Option<string[]>("--synthetic") { Description = "Generated models, SHAPE:TYPE[:CONTEXT] with SHAPE tinyllama|llama7b|demo, TYPE Q4_0, Q8_0, Q4_K_M, F16, … and CONTEXT the context length if not the shape's (cached after the first run)", HelpName = "SHAPE:TYPE[:CONTEXT][,…]" };
        var backends = new Option<string[]>("--backend") { Description = "Backends (default: the first available in plugins.json's preference order)", HelpName = "NAME[,NAME]" };
        var gpuLayers = new Option<string[]>("--gpu-layers", "-ngl") { Description = "Layers on the backend, counted from the first (default: all; negative = all)", HelpName = "N[,N]" };
        var splitModes = new Option<string[]>("--split-mode", "-sm") { Description = "Layer split over the backend's devices: layer (default) or none (docs/multi-gpu.md)", HelpName = "none|layer[,…]" };
        var tensorSplits = new Option<string[]>("--tensor-split", "-ts") { Description = "Proportions per device, / between devices, a comma between configurations, e.g. 1/1,3/1 (default: by free memory)", HelpName = "P/P[,…]" };
        var threads = new Option<string[]>("--threads", "-t") { Description = "CPU threads (default: plugins.json's cpu option, else all cores)", HelpName = "N[,N]" };
        var mmap = new Option<string[]>("--mmap") { Description = "1 = map the file (default), 0 = read it into heap memory", HelpName = "0|1[,…]" };
        var hugePages = new Option<string[]>("--hugepages") { Description = "1 = hold the model in 2 MiB huge pages (Linux, needs a reserved pool); default 0", HelpName = "0|1[,…]" };
        var memory = new Option<string[]>("--memory") { Description = "Memory modes directly: file, hugepages, anonymous, heap (instead of --mmap/--hugepages)", HelpName = "MODE[,MODE]" };
        var hostImport = new Option<string[]>("--host-import", "--gpu-host-import") { Description = $"Host import: auto, on, off (default: {HostImportSetting.EnvironmentVariable}, else auto)", HelpName = "auto|on|off[,…]" };
        var prompt = new Option<string[]>("--n-prompt", "-p") { Description = "Prompt-processing tests: tokens evaluated in one batch (default 512; 0: none)", HelpName = "N[,N]" };
        var generate = new Option<string[]>("--n-gen", "-n") { Description = "Generation tests: tokens evaluated one at a time (default 128; 0: none)", HelpName = "N[,N]" };
        var promptGenerate = new Option<string[]>("--prompt-gen", "-pg") { Description = "Prompt then generation, timed together (repeat for more)", HelpName = "P,N" };
        var depth = new Option<string[]>("--n-depth", "-d") { Description = "Tokens put into the KV cache before each test, untimed (default 0)", HelpName = "N[,N]" };
        var parallel = new Option<string[]>("--parallel", "-npl") { Description = "Concurrent-decode tests instead of pp/tg: N sequences decode together, one token each per forward pass, -n tokens each after an untimed prompt; t/s is the aggregate", HelpName = "N[,N]" };
        var parallelPrompt = new Option<string>("--parallel-prompt") { Description = "Prompt tokens per sequence of the --parallel tests, evaluated untimed (default 16)", HelpName = "N" };
        var repetitions = new Option<string>("--repetitions", "-r") { Description = "Timed repetitions per test, after one warm-up (default 5)", HelpName = "N" };
        var batch = new Option<string[]>("--batch-size", "-b") { Description = "Logical batch: prompt tokens per evaluate call (default 2048)", HelpName = "N[,N]" };
        var microBatch = new Option<string[]>("--ubatch-size", "-ub") { Description = "Physical batch: tokens per forward pass (default 512)", HelpName = "N[,N]" };
        var output = new Option<string>("--output", "-o") { Description = "Output format: md (default), csv, json, jsonl", HelpName = "md|csv|json|jsonl", DefaultValueFactory = _ => "md" };
        var cacheTypes = new Option<string[]>("--cache-type", "-ctk", "--kv-type") { Description = $"KV cache types, for K and V alike: {KvCacheTypes.AcceptedNames} (default f16; the type_kv column)", HelpName = "TYPE[,TYPE]" };
        var reference = new Option<string?>("--reference") { Description = "Add reference rows: llamacpp (llama.cpp through LLamaSharp, tools/LlamaCppReference) and a ratio column", HelpName = "llamacpp" };
        var referenceTool = new Option<string?>("--reference-tool") { Description = "The reference program to run: LlamaCppReference.dll or an executable (default: found next to pluginengine or in the repository)", HelpName = "PATH" };

        var command = new Command("bench", "Benchmark backends and memory modes (llama-bench style: pp/tg tests, mean ± sd)");
        foreach (var o in new Option[] { models, synthetic, backends, gpuLayers, splitModes, tensorSplits, threads, mmap, hugePages, memory, hostImport, prompt, generate, promptGenerate, depth, parallel, parallelPrompt, repetitions, batch, microBatch, cacheTypes, output, reference, referenceTool })
            command.Options.Add(o);

        command.SetAction(parse =>
        {
            var format = Parse(() => BenchOutput.ParseFormat(parse.GetValue(output) ?? "md"));
            string? referenceName = parse.GetValue(reference);
            if (referenceName is not null && !referenceName.Equals("llamacpp", StringComparison.OrdinalIgnoreCase))
                throw new UserErrorException($"--reference {referenceName}: the only reference is llamacpp");

            int reps = parse.GetValue(repetitions) is { } r ? Lists.Int("-r", [r], min: 1, defaultValue: 5) switch
            {
                [var one] => one,
                _ => throw new UserErrorException($"-r {r}: one repetition count, not a list"),
            } : 5;
            var tests = parse.GetValue(parallel) is { Length: > 0 } sequenceCounts
                ? ParallelTests(sequenceCounts, parse.GetValue(parallelPrompt), parse.GetValue(generate), parse.GetValue(prompt), parse.GetValue(promptGenerate), parse.GetValue(depth))
                : Tests(parse.GetValue(prompt), parse.GetValue(generate), parse.GetValue(promptGenerate), parse.GetValue(depth));
            var memoryModes = MemoryModes(parse.GetValue(memory), parse.GetValue(mmap), parse.GetValue(hugePages), context);
            var hostImports = HostImports(parse.GetValue(hostImport));
            var threadCounts = parse.GetValue(threads) is { Length: > 0 } t ? Lists.Int("-t", t, min: 1, defaultValue: 0).Select(x => (int?)x).ToArray() : [null];
            var backendNames = parse.GetValue(backends) is { Length: > 0 } b ? Lists.Split("--backend", b).Select(x => (string?)x).ToArray() : [null];

            var layerCounts = Lists.Int("-ngl", parse.GetValue(gpuLayers), min: int.MinValue, defaultValue: -1).Select(x => x < 0 ? -1 : x).Distinct().ToArray();
            var splits = Splits(parse.GetValue(splitModes), parse.GetValue(tensorSplits));
            var batches = Lists.Int("-b", parse.GetValue(batch), min: 1, defaultValue: 2048);
            var microBatches = Lists.Int("-ub", parse.GetValue(microBatch), min: 1, defaultValue: 512);
            var kvTypes = CacheTypes(parse.GetValue(cacheTypes));

            // Cheap checks first: a typo in --backend must not cost the minutes of generating a synthetic model.
            var configuration = context.LocatePluginConfiguration();
            BenchSession.CheckBackends(configuration, backendNames, context.Loggers);
            var plan = new BenchPlan
            {
                Models = Parse(() => Models(parse.GetValue(models), parse.GetValue(synthetic), context)),
                Backends = backendNames,
                MemoryModes = memoryModes,
                HostImports = hostImports,
                GpuLayers = layerCounts,
                Splits = splits,
                Threads = threadCounts,
                Batches = batches,
                MicroBatches = microBatches,
                CacheTypes = kvTypes,
                Tests = tests,
                Repetitions = reps,
            };

            var session = new BenchSession(plan, configuration, SystemMappingFactory.Instance, context.Loggers);
            bool interactive = format == BenchOutputFormat.Markdown && ReferenceEquals(context.Error, Console.Error) && !Console.IsErrorRedirected;
            // csv/jsonl rows are written as each test finishes, except with --reference: their ratio column is known only at the end.
            var stream = new BenchRowStream(context.Output, format, streamRows: referenceName is null);
            BenchRun run;
            int? signal;
            using (var interruption = BenchInterruption.Listen(context.Error))
            {
                run = Parse(() => interactive
                    ? RunWithStatus(session, interruption.Token, stream.Add)
                    : session.Run(new LineProgress(context.Error), interruption.Token, stream.Add));
                signal = interruption.Signal;
            }

            foreach (string warning in run.Warnings) context.Error.WriteLine($"warning: {warning}");
            var devices = run.Devices.ToList();
            if (referenceName is not null && !run.Interrupted)
            {
                var referenceRows = RunReference(run, reps, parse.GetValue(referenceTool), context);
                if (referenceRows.Count > 0)
                {
                    LlamaCppReference.AttachRatios(stream.Rows, referenceRows);
                    foreach (var row in referenceRows) stream.Add(row);
                    devices.Add(new BenchDeviceInfo("llama.cpp", referenceRows[0].Device, referenceRows[0].DeviceDetails));
                }
            }
            stream.Complete(run.Machine, devices);
            foreach (string failure in run.Failures) context.Error.WriteLine($"error: {failure}");
            if (run.Interrupted)
            {
                context.Error.WriteLine($"bench interrupted{(signal is { } s ? $" by {BenchInterruption.SignalName(s)}" : "")}: " +
                    $"{run.Rows.Count} of {plan.RowCount} rows measured{(referenceName is not null ? "; llama.cpp reference skipped" : "")}");
                return 128 + (signal ?? BenchInterruption.SigInt);
            }
            return run.Failures.Count == 0 ? ExitCodes.Success : ExitCodes.UserError;
        });
        return command;
    }

    /// <summary>Runs the reference program once per (model, threads, n_batch, n_ubatch); a failure is reported and skipped.</summary>
    private static List<BenchResult> RunReference(BenchRun run, int repetitions, string? toolPath, CliContext context)
    {
        var rows = new List<BenchResult>();
        var tool = LlamaCppReference.Locate(toolPath, AppContext.BaseDirectory, out string? whyNot);
        if (tool is null)
        {
            context.Error.WriteLine($"reference: llama.cpp rows skipped: {whyNot}");
            return rows;
        }
        var groups = run.Rows.GroupBy(r => (r.ModelFilename, r.ModelLabel, r.NThreads, r.NBatch, r.NUbatch, r.TypeKv));
        foreach (var group in groups)
        {
            var tests = group.Select(r => new BenchTest(r.NPrompt, r.NGen, r.NDepth)).Distinct().ToArray();
            var request = new LlamaCppReferenceRequest(group.Key.ModelFilename, group.Key.ModelLabel, group.Key.NThreads, group.Key.NBatch, group.Key.NUbatch, repetitions, tests, group.Key.TypeKv);
            context.Error.WriteLine($"reference: llama.cpp on {group.Key.ModelLabel}, {group.Key.NThreads} threads, KV cache {group.Key.TypeKv} ({tool.Describe()})");
            try
            {
                rows.AddRange(tool.Run(request));
            }
            catch (LlamaCppReferenceException e)
            {
                context.Error.WriteLine($"reference: llama.cpp rows skipped for {group.Key.ModelLabel}: {e.Message}");
            }
        }
        return rows;
    }

    private static BenchRun RunWithStatus(BenchSession session, CancellationToken cancellation, Action<BenchResult> rowMeasured)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error), Interactive = InteractionSupport.Yes });
        BenchRun? run = null;
        console.Status().Start("bench: starting", status => run = session.Run(new StatusProgress(status), cancellation, rowMeasured));
        return run!;
    }

    /// <summary>Tests in llama-bench's order, for each depth: every pp, every tg, every pg.</summary>
    private static BenchTest[] Tests(string[]? prompt, string[]? generate, string[]? promptGenerate, string[]? depth)
    {
        // As llama-bench: -p 0 / -n 0 run no prompt / generation tests (e.g. -p 0 -n 128 for generation alone).
        var prompts = Lists.Int("-p", prompt, min: 0, defaultValue: 512).Where(p => p > 0).ToArray();
        var gens = Lists.Int("-n", generate, min: 0, defaultValue: 128).Where(n => n > 0).ToArray();
        var depths = Lists.Int("-d", depth, min: 0, defaultValue: 0);
        var pairs = new List<(int P, int N)>();
        foreach (string item in promptGenerate ?? [])
        {
            // One -pg value is one pair, "P,N": the comma here separates the pair's members, not list items.
            var values = Lists.Int("-pg", [item], min: 1, defaultValue: 0);
            if (values.Length != 2) throw new UserErrorException($"-pg {item}: expected P,N (prompt tokens, generated tokens), e.g. -pg 512,128");
            pairs.Add((values[0], values[1]));
        }
        var tests = new List<BenchTest>();
        foreach (int d in depths)
        {
            tests.AddRange(prompts.Select(p => new BenchTest(p, 0, d)));
            tests.AddRange(gens.Select(n => new BenchTest(0, n, d)));
            tests.AddRange(pairs.Select(pg => new BenchTest(pg.P, pg.N, d)));
        }
        if (tests.Count == 0) throw new UserErrorException("-p 0 and -n 0 without -pg: no test to run");
        return tests.Distinct().ToArray();
    }

    /// <summary>
    /// The concurrent-decode tests of --parallel (docs/batching.md#benchmark): for each sequence count and each -n value, that
    /// many sequences each with an untimed --parallel-prompt-token prompt, then -n tokens each (default 32 here).
    /// </summary>
    private static BenchTest[] ParallelTests(string[] counts, string? promptTokens, string[]? generate, string[]? prompt, string[]? promptGenerate, string[]? depth)
    {
        if (prompt is { Length: > 0 } || promptGenerate is { Length: > 0 } || depth is { Length: > 0 })
            throw new UserErrorException("--parallel runs concurrent-decode tests only: give their prompt with --parallel-prompt, not -p, -pg or -d");
        var sequences = Lists.Int("--parallel", counts, min: 1, defaultValue: 1);
        int promptLength = promptTokens is null ? 16 : Lists.Int("--parallel-prompt", [promptTokens], min: 1, defaultValue: 16) switch
        {
            [var one] => one,
            _ => throw new UserErrorException($"--parallel-prompt {promptTokens}: one token count, not a list"),
        };
        var gens = Lists.Int("-n", generate, min: 1, defaultValue: 32);
        return sequences.SelectMany(n => gens.Select(g => BenchTest.Parallel(n, promptLength, g))).Distinct().ToArray();
    }

    /// <summary>The KV cache types of -ctk (a comma list, as llama-bench's); F16 alone by default.</summary>
    internal static GgmlType[] CacheTypes(string[]? values)
    {
        if (values is not { Length: > 0 }) return [GgmlType.F16];
        return Lists.Split("-ctk", values).Select(name => KvCacheTypes.TryParse(name, out var type) ? type
            : throw new UserErrorException($"-ctk {name}: expected {KvCacheTypes.AcceptedNames}")).Distinct().ToArray();
    }

    /// <summary>Memory modes from --memory, or the product of --mmap and --hugepages (impossible pairs are explained).</summary>
    private static ModelMemoryMode[] MemoryModes(string[]? memory, string[]? mmap, string[]? hugePages, CliContext context)
    {
        bool isLinux = OperatingSystem.IsLinux();
        if (memory is { Length: > 0 })
        {
            if (mmap is { Length: > 0 } || hugePages is { Length: > 0 })
                throw new UserErrorException("--memory names the memory modes directly; give it or --mmap/--hugepages, not both");
            return Lists.Split("--memory", memory).Select(m => m.ToLowerInvariant() switch
            {
                "file" => ModelMemoryMode.FileMapping,
                "hugepages" => isLinux ? ModelMemoryMode.HugePages : throw new UserErrorException("--memory hugepages is only supported on Linux (it needs MAP_HUGETLB and the hugetlbfs pool)"),
                "anonymous" => ModelMemoryMode.Anonymous,
                "heap" => ModelMemoryMode.Heap,
                _ => throw new UserErrorException($"--memory: unknown mode '{m}' (expected file, hugepages, anonymous or heap)"),
            }).Distinct().ToArray();
        }

        var modes = new List<ModelMemoryMode>();
        var refused = new List<string>();
        foreach (bool useMmap in Lists.Bool("--mmap", mmap, defaultValue: true))
        foreach (bool huge in Lists.Bool("--hugepages", hugePages, defaultValue: false))
        {
            try
            {
                var mode = LoadOptions.FromSwitches(useMmap, huge, HostImportSetting.Default, isLinux).Memory;
                if (!modes.Contains(mode)) modes.Add(mode);
            }
            catch (LoadOptionsException e)
            {
                refused.Add($"--hugepages {(huge ? 1 : 0)} with --mmap {(useMmap ? 1 : 0)}: {e.Message}");
            }
        }
        if (modes.Count == 0) throw new UserErrorException(string.Join("; ", refused));
        foreach (string why in refused) context.Error.WriteLine($"note: skipping {why}");
        return modes.ToArray();
    }

    private static HostImportSetting[] HostImports(string[]? values)
    {
        try
        {
            if (values is not { Length: > 0 }) return [HostImportSetting.Resolve(null)];
            return Lists.Split("--host-import", values).Select(v => HostImportSetting.Parse(v, "--host-import"))
                .Distinct().Select(mode => HostImportSetting.Resolve(mode)).ToArray();
        }
        catch (ArgumentException e)
        {
            throw new UserErrorException(e.Message); // a bad flag or environment value; the message names which
        }
    }

    private static BenchModelSource[] Models(string[]? models, string[]? synthetic, CliContext context)
    {
        void Log(string message) => context.Error.WriteLine(message);
        var sources = new List<BenchModelSource>();
        if (models is { Length: > 0 }) sources.AddRange(Lists.Split("-m", models).Select(m => BenchModelSource.Resolve(m, Log)));
        if (synthetic is { Length: > 0 }) sources.AddRange(Lists.Split("--synthetic", synthetic).Select(s => BenchModelSource.Synthetic(s, Log)));
        if (sources.Count == 0) sources.Add(BenchModelSource.Demo(Log));
        return sources.DistinctBy(s => s.Path).ToArray();
    }

    /// <summary>Runs <paramref name="action"/>, turning the core's parameter errors into user errors (exit 2).</summary>
    private static T Parse<T>(Func<T> action)
    {
        try { return action(); }
        catch (BenchParameterException e) { throw new UserErrorException(e.Message); }
    }

    /// <summary>
    /// The split configurations: each -sm mode, and for layer each -ts proportion list ("1/1"; checked like the run
    /// command's --tensor-split). none ignores the proportions. Default: layer by free memory.
    /// </summary>
    internal static IReadOnlyList<BenchSplit> Splits(string[]? modes, string[]? proportions)
    {
        var modeList = modes is { Length: > 0 } ? Lists.Split("-sm", modes) : ["layer"];
        var shares = new List<IReadOnlyList<double>?>();
        if (proportions is { Length: > 0 })
            foreach (string item in Lists.Split("-ts", proportions))
            {
                var values = new double[item.Split('/').Length];
                var parts = item.Split('/');
                for (int i = 0; i < parts.Length; i++)
                    if (!double.TryParse(parts[i].Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out values[i]))
                        throw new UserErrorException($"-ts {item}: '{parts[i]}' is not a number (write proportions separated by /, e.g. 3/1)");
                try { new LayerSplitRequest { Proportions = values }.Validate(); }
                catch (SplitConfigException e) { throw new UserErrorException(e.Message.Replace("--tensor-split " + string.Join(",", values.Select(v => v.ToString(CultureInfo.InvariantCulture))), "-ts " + item, StringComparison.Ordinal)); }
                shares.Add(values);
            }
        else shares.Add(null);
        var result = new List<BenchSplit>();
        foreach (string mode in modeList)
        {
            switch (mode.ToLowerInvariant())
            {
                case "none": result.Add(new BenchSplit(SplitMode.None, null)); break;
                case "layer": result.AddRange(shares.Select(p => new BenchSplit(SplitMode.Layer, p))); break;
                default: throw new UserErrorException($"-sm {mode}: expected none or layer");
            }
        }
        return result.Distinct().ToArray();
    }

    /// <summary>Comma lists: every option value may hold several items, and options may repeat.</summary>
    internal static class Lists
    {
        /// <summary>The items of every value, in order; an empty item is an error naming the option.</summary>
        public static string[] Split(string option, IEnumerable<string> values)
        {
            var items = new List<string>();
            foreach (string value in values)
            {
                foreach (string item in value.Split(','))
                {
                    string trimmed = item.Trim();
                    if (trimmed.Length == 0) throw new UserErrorException($"{option} {value}: empty item in the list (write items separated by single commas)");
                    items.Add(trimmed);
                }
            }
            return items.ToArray();
        }

        /// <summary>Integers ≥ <paramref name="min"/>; <paramref name="defaultValue"/> alone when the option was not given.</summary>
        public static int[] Int(string option, string[]? values, int min, int defaultValue)
        {
            if (values is not { Length: > 0 }) return [defaultValue];
            var result = new List<int>();
            foreach (string item in Split(option, values))
            {
                if (!int.TryParse(item, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int value))
                    throw new UserErrorException($"{option}: '{item}' is not an integer");
                if (value < min)
                    throw new UserErrorException(min == 1 ? $"{option} {item}: must be positive (at least 1)" : $"{option} {item}: must be at least {min}");
                result.Add(value);
            }
            return result.ToArray();
        }

        /// <summary>0/1 switches.</summary>
        public static bool[] Bool(string option, string[]? values, bool defaultValue)
        {
            if (values is not { Length: > 0 }) return [defaultValue];
            return Split(option, values).Select(item => item.ToLowerInvariant() switch
            {
                "1" or "true" or "on" => true,
                "0" or "false" or "off" => false,
                _ => throw new UserErrorException($"{option}: '{item}' is not 0 or 1"),
            }).Distinct().ToArray();
        }
    }

    /// <summary>"[i/n] …" lines (redirected stderr, machine formats, tests).</summary>
    private sealed class LineProgress(TextWriter error) : IBenchProgress
    {
        public void Report(int index, int total, string message) => error.WriteLine($"[{index}/{total}] {message}");
    }

    /// <summary>A Spectre status line on an interactive terminal.</summary>
    private sealed class StatusProgress(StatusContext status) : IBenchProgress
    {
        public void Report(int index, int total, string message) => status.Status(Markup.Escape($"[{index}/{total}] {message}"));
    }
}

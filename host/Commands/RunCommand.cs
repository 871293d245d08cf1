using System.CommandLine;
using System.Globalization;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Sampling;

namespace PluginEngine.Host.Commands;

/// <summary>
/// <c>pluginengine run [-m MODEL] -p PROMPT [-n N] [sampling] [--backend X] [-t N] …</c>: generates text, streamed,
/// then prints timings the way llama.cpp does (load, prompt eval, eval).
/// </summary>
public static class RunCommand
{
    public static Command Create(CliContext context)
    {
        var model = new ModelOptions();
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Prompt text (default: \"Once upon a time\")" };
        var promptFile = new Option<string?>("--file", "-f") { Description = "Read the prompt from this file (UTF-8)", HelpName = "FILE" };
        var noWarmup = new Option<bool>("--no-warmup") { Description = "Skip the warm-up step (one token evaluated and discarded before the prompt, timed on its own line)" };
        var count = new Option<int>("--n-predict", "-n") { Description = "Tokens to generate", DefaultValueFactory = _ => 64 };
        var ctx = new Option<int>("--ctx-size", "-c") { Description = "Context size (default: min(model's, 4096))" };
        var batch = new Option<int>("--batch-size", "-b") { Description = "Prompt tokens per forward pass", DefaultValueFactory = _ => 512 };
        var sampling = new SamplingOptions();
        var kv = new KvCacheOptions();

        var command = new Command("run", "Generate text from a prompt (streams tokens; prints timings)");
        model.AddTo(command);
        sampling.AddTo(command);
        foreach (var o in new Option[] { prompt, promptFile, count, ctx, batch }) command.Options.Add(o);
        kv.AddTo(command);
        command.Options.Add(noWarmup);
        command.SetAction(parse =>
        {
            var settings = sampling.Resolve(parse);
            int n = parse.GetValue(count);
            if (n < 0) throw new UserErrorException($"--n-predict {n}: must be 0 or more", isUsage: true);
            string promptText = PromptText(parse.GetValue(prompt), parse.GetValue(promptFile));
            if (parse.GetValue(ctx) < 0) throw new UserErrorException($"--ctx-size {parse.GetValue(ctx)}: must be positive (or 0 for the default)", isUsage: true);
            if (parse.GetValue(batch) <= 0) throw new UserErrorException($"--batch-size {parse.GetValue(batch)}: must be at least 1", isUsage: true);

            var kvType = kv.Resolve(parse);
            using var loaded = model.LoadModel(parse, context, out string path, model.ResolveSplit(parse, parse.GetValue(ctx), parse.GetValue(batch), kvType));
            var hp = loaded.HyperParameters;
            int ctxSize = parse.GetValue(ctx) is > 0 and var c ? c : Math.Min(hp.ContextLength, 4096);
            if (ctxSize > hp.ContextLength) throw new UserErrorException($"--ctx-size {ctxSize} exceeds the model's context length {hp.ContextLength}", isUsage: true);
            using var llama = loaded.CreateContext(new ContextOptions(ctxSize, parse.GetValue(batch), kvType));

            var err = context.Error;
            err.WriteLine($"model: {loaded.Name} ({path}), {hp.Architecture}, {hp.BlockCount} layers, vocab {hp.VocabularySize}");
            if (loaded.HasRandomWeights) err.WriteLine("note: this model has RANDOM weights (the demo model); its text is meaningless but every op ran for real");
            err.WriteLine($"backend: {loaded.Schedule.Describe(llama.Options.KvCacheType).TrimEnd().Replace("\n", "; ")}");
            err.WriteLine(KvCacheLine(llama, hp));
            err.WriteLine($"sampling: temp {settings.Temperature}, top-k {settings.TopK}, top-p {settings.TopP}, min-p {settings.MinP}, repeat-penalty {settings.RepeatPenalty} (last {settings.RepeatLastN}), seed {settings.Seed}");

            var tokens = loaded.Tokenizer.Encode(promptText, addBos: true, parseSpecial: true);
            if (tokens.Length == 0) throw new UserErrorException("the prompt encodes to no tokens");
            if (tokens.Length + n > ctxSize) throw new UserErrorException($"prompt ({tokens.Length} tokens) + {n} to generate exceed the context size {ctxSize}; raise -c or lower -n");

            // The first step pays one-time costs (kernel compilation on GPU backends, page faults of a mapped model):
            // time it on its own line so the prompt timing measures the prompt.
            TimeSpan? warmup = parse.GetValue(noWarmup) ? null : Warmup(llama, tokens[0]);

            context.Output.Write(promptText);
            var result = Generator.Generate(llama, loaded.Tokenizer, tokens, n, new Sampler(settings), text => { context.Output.Write(text); context.Output.Flush(); });
            context.Output.WriteLine();

            err.WriteLine();
            err.WriteLine(TimingLine("load time", loaded.LoadTime));
            if (warmup is { } w) err.WriteLine(TimingLine("warm-up (1st step)", w) + " (one-time costs: kernel compilation, first page faults)");
            err.WriteLine(TimingLine("prompt eval time", result.PromptTime, result.PromptTokens));
            err.WriteLine(TimingLine("eval time", result.GenerationTime, Math.Max(0, result.GeneratedTokens - 1)));
            if (llama.Transfers.Copies > 0) err.WriteLine($"device transfers = {llama.Transfers} ({llama.Transfers.DescribePairs()})");
            if (llama.OpFallbackCounts.Count > 0)
                err.WriteLine($"cpu fallback ops = {string.Join(", ", llama.OpFallbackCounts.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} ×{kv.Value}"))}");
            if (result.StoppedAtEndOfSequence) err.WriteLine("stopped at end-of-sequence token");
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>The prompt from <c>-p</c> or <c>-f FILE</c> (not both); the default when neither is given.</summary>
    private static string PromptText(string? text, string? file)
    {
        if (text is not null && file is not null) throw new UserErrorException("give the prompt with -p or -f, not both", isUsage: true);
        if (file is null) return text ?? "Once upon a time";
        if (Directory.Exists(file)) throw new UserErrorException($"-f {file}: is a directory, not a prompt file");
        try
        {
            return File.ReadAllText(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserErrorException($"-f {file}: cannot read the prompt file ({(e is FileNotFoundException or DirectoryNotFoundException ? "not found" : e.Message)})");
        }
    }

    /// <summary>Evaluates one token and forgets it (llama.cpp does the same before the prompt); returns how long it took.</summary>
    private static TimeSpan Warmup(LlamaContext llama, int token)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var logits = new float[llama.VocabularySize];
        llama.Evaluate([token], logits);
        llama.Reset();
        return clock.Elapsed;
    }

    /// <summary>
    /// "KV cache: q8_0, 8.50 MiB for 2048 positions (4.25 KiB per position, 1.06 KiB per layer) on cpu (4 layers)": what the context's
    /// cache costs and which device holds it (a device that cannot attend over a quantized cache leaves it to the CPU;
    /// docs/batching.md#quantized-kv-cache).
    /// </summary>
    internal static string KvCacheLine(LlamaContext llama, Core.Models.LlamaHyperParameters hp)
    {
        var type = llama.Options.KvCacheType;
        long positions = (long)llama.ContextSize * llama.Sequences, perLayer = KvCacheTypes.BytesPerPosition(type, hp), perPosition = perLayer * hp.BlockCount;
        var holders = llama.KvCacheLayers.Select(kv => $"{kv.Key.Description.Backend} ({kv.Value} layer{(kv.Value == 1 ? "" : "s")})");
        return $"KV cache: {KvCacheTypes.Name(type)}, {Bench.BenchOutput.FormatBytes(perPosition * positions)} for {positions} positions " +
               $"({Bench.BenchOutput.FormatBytes(perPosition)} per position, {Bench.BenchOutput.FormatBytes(perLayer)} per layer) on {string.Join(", ", holders)}";
    }

    /// <summary>One llama.cpp-style timing line, names and numbers aligned in columns.</summary>
    internal static string TimingLine(string what, TimeSpan time, int? tokens = null)
    {
        var c = CultureInfo.InvariantCulture;
        string head = string.Format(c, "{0,-18} = {1,10:F2} ms", what, time.TotalMilliseconds);
        if (tokens is not { } n) return head;
        if (n == 0) return string.Format(c, "{0} / {1,5} tokens", head, 0);
        return string.Format(c, "{0} / {1,5} tokens ({2,8:F2} ms per token, {3,8:F2} tokens per second)", head, n, time.TotalMilliseconds / n, n / time.TotalSeconds);
    }
}

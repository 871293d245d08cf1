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
        var prompt = new Option<string>("--prompt", "-p") { Description = "Prompt text", DefaultValueFactory = _ => "Once upon a time" };
        var count = new Option<int>("--n-predict", "-n") { Description = "Tokens to generate", DefaultValueFactory = _ => 64 };
        var ctx = new Option<int>("--ctx-size", "-c") { Description = "Context size (default: min(model's, 4096))" };
        var batch = new Option<int>("--batch-size", "-b") { Description = "Prompt tokens per forward pass", DefaultValueFactory = _ => 512 };
        var temp = new Option<float>("--temp") { Description = "Temperature (0 = greedy)", DefaultValueFactory = _ => 0.8f };
        var topK = new Option<int>("--top-k") { Description = "Keep the K most likely tokens (0 = off)", DefaultValueFactory = _ => 40 };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling threshold (1 = off)", DefaultValueFactory = _ => 0.95f };
        var minP = new Option<float>("--min-p") { Description = "Drop tokens below min-p × the best probability (0 = off)", DefaultValueFactory = _ => 0.05f };
        var repeatPenalty = new Option<float>("--repeat-penalty") { Description = "Penalty for recently seen tokens (1 = off)", DefaultValueFactory = _ => 1.0f };
        var repeatLastN = new Option<int>("--repeat-last-n") { Description = "How many recent tokens the penalty looks at", DefaultValueFactory = _ => 64 };
        var seed = new Option<long>("--seed", "-s") { Description = "Sampling seed (default: random; same seed → same text)", DefaultValueFactory = _ => -1 };
        var kvF32 = new Option<bool>("--kv-f32") { Description = "Keep the KV cache in F32 instead of F16" };

        var command = new Command("run", "Generate text from a prompt (streams tokens; prints timings)");
        model.AddTo(command);
        foreach (var o in new Option[] { prompt, count, ctx, batch, temp, topK, topP, minP, repeatPenalty, repeatLastN, seed, kvF32 }) command.Options.Add(o);
        command.SetAction(parse =>
        {
            long seedValue = parse.GetValue(seed);
            var settings = new SamplerSettings
            {
                Temperature = parse.GetValue(temp), TopK = parse.GetValue(topK), TopP = parse.GetValue(topP), MinP = parse.GetValue(minP),
                RepeatPenalty = parse.GetValue(repeatPenalty), RepeatLastN = parse.GetValue(repeatLastN),
                Seed = seedValue < 0 ? (ulong)Random.Shared.NextInt64() : (ulong)seedValue,
            };
            try { settings.Validate(); } catch (ArgumentException e) { throw new UserErrorException(e.Message); }
            int n = parse.GetValue(count);
            if (n < 0) throw new UserErrorException($"--n-predict {n}: must be ≥ 0");

            using var loaded = model.LoadModel(parse, context, out string path);
            var hp = loaded.HyperParameters;
            int ctxSize = parse.GetValue(ctx) is > 0 and var c ? c : Math.Min(hp.ContextLength, 4096);
            if (ctxSize > hp.ContextLength) throw new UserErrorException($"--ctx-size {ctxSize} exceeds the model's context length {hp.ContextLength}");
            using var llama = loaded.CreateContext(new ContextOptions(ctxSize, Math.Max(1, parse.GetValue(batch)),
                parse.GetValue(kvF32) ? Abstractions.GgmlType.F32 : Abstractions.GgmlType.F16));

            var err = context.Error;
            err.WriteLine($"model: {loaded.Name} ({path}), {hp.Architecture}, {hp.BlockCount} layers, vocab {hp.VocabularySize}");
            if (loaded.HasRandomWeights) err.WriteLine("note: this model has RANDOM weights (the demo model); its text is meaningless but every op ran for real");
            err.WriteLine($"backend: {loaded.Schedule.Describe(llama.Options.KvCacheType).TrimEnd().Replace("\n", "; ")}");
            err.WriteLine($"sampling: temp {settings.Temperature}, top-k {settings.TopK}, top-p {settings.TopP}, min-p {settings.MinP}, repeat-penalty {settings.RepeatPenalty} (last {settings.RepeatLastN}), seed {settings.Seed}");

            string promptText = parse.GetValue(prompt) ?? "";
            var tokens = loaded.Tokenizer.Encode(promptText, addBos: true, parseSpecial: true);
            if (tokens.Length == 0) throw new UserErrorException("the prompt encodes to no tokens");
            if (tokens.Length + n > ctxSize) throw new UserErrorException($"prompt ({tokens.Length} tokens) + {n} to generate exceed the context size {ctxSize}; raise -c or lower -n");

            context.Output.Write(promptText);
            var result = Generator.Generate(llama, loaded.Tokenizer, tokens, n, new Sampler(settings), text => { context.Output.Write(text); context.Output.Flush(); });
            context.Output.WriteLine();

            static string Ms(TimeSpan t) => t.TotalMilliseconds.ToString("F2", CultureInfo.InvariantCulture);
            string Line(string what, TimeSpan t, int count) => count == 0
                ? $"{what} = {Ms(t)} ms / 0 tokens"
                : $"{what} = {Ms(t)} ms / {count} tokens ({(t.TotalMilliseconds / count).ToString("F2", CultureInfo.InvariantCulture)} ms per token, {(count / t.TotalSeconds).ToString("F2", CultureInfo.InvariantCulture)} tokens per second)";
            err.WriteLine();
            err.WriteLine($"load time        = {Ms(loaded.LoadTime)} ms");
            err.WriteLine(Line("prompt eval time", result.PromptTime, result.PromptTokens));
            err.WriteLine(Line("eval time        ", result.GenerationTime, Math.Max(0, result.GeneratedTokens - 1)));
            if (llama.Transfers.Copies > 0) err.WriteLine($"device transfers = {llama.Transfers}");
            if (llama.OpFallbackCounts.Count > 0)
                err.WriteLine($"cpu fallback ops = {string.Join(", ", llama.OpFallbackCounts.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} ×{kv.Value}"))}");
            if (result.StoppedAtEndOfSequence) err.WriteLine("stopped at end-of-sequence token");
            return ExitCodes.Success;
        });
        return command;
    }
}

using System.CommandLine;
using System.Globalization;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Sampling;

namespace PluginEngine.Host.Commands;

/// <summary>
/// <c>pluginengine chat [-m MODEL] [-sys TEXT] [-p TEXT …] [--chat-template NAME|FILE] [sampling] [-n N] [-c N]</c>: a
/// multi-turn conversation formatted by the model's chat template, answers streamed, the KV cache kept across turns (only
/// each new turn is evaluated). Interactive (<c>/exit</c>, <c>/reset</c>, Ctrl+C stops an answer) unless <c>-p</c> gives
/// the messages: each is answered in order, and <c>/reset</c> among them starts over. A speed line follows every answer.
/// </summary>
public static class ChatCommand
{
    public static Command Create(CliContext context)
    {
        var model = new ModelOptions();
        var sampling = new SamplingOptions();
        var prompts = new Option<string[]>("--prompt", "-p") { Description = "Answer this message and exit (repeat -p for several turns; \"/reset\" starts over)", AllowMultipleArgumentsPerToken = false };
        var system = new Option<string?>("--system-prompt", "-sys") { Description = "System message the conversation starts with" };
        var template = new Option<string?>("--chat-template") { Description = $"Override the model's chat template: a built-in ({BuiltInChatTemplates.Names}) or a file holding a Jinja template", HelpName = "NAME|FILE" };
        var count = new Option<int>("--n-predict", "-n") { Description = "Most tokens per answer (-1 = until the end of the turn or a full context)", DefaultValueFactory = _ => -1 };
        var ctx = new Option<int>("--ctx-size", "-c") { Description = "Context size (default: min(model's, 4096))" };
        var batch = new Option<int>("--batch-size", "-b") { Description = "Prompt tokens per forward pass", DefaultValueFactory = _ => 512 };
        var kv = new KvCacheOptions();
        var parseSpecial = new Option<bool>("--parse-special") { Description = "Parse special-token text in messages (e.g. <|eot_id|>) as special tokens (default: plain text)" };

        var command = new Command("chat", "Chat with a model through its chat template (interactive, or one answer per -p)");
        model.AddTo(command);
        sampling.AddTo(command);
        foreach (var o in new Option[] { prompts, system, template, count, ctx, batch }) command.Options.Add(o);
        kv.AddTo(command);
        command.Options.Add(parseSpecial);
        command.SetAction(parse =>
        {
            var settings = sampling.Resolve(parse);
            int n = parse.GetValue(count);
            if (n < -1) throw new UserErrorException($"--n-predict {n}: must be -1 (no limit) or 0 or more", isUsage: true);

            var kvType = kv.Resolve(parse);
            using var loaded = model.LoadModel(parse, context, out string path, model.ResolveSplit(parse, Math.Max(0, parse.GetValue(ctx)), Math.Max(1, parse.GetValue(batch)), kvType));
            var hp = loaded.HyperParameters;
            int ctxSize = parse.GetValue(ctx) is > 0 and var c ? c : Math.Min(hp.ContextLength, 4096);
            if (ctxSize > hp.ContextLength) throw new UserErrorException($"--ctx-size {ctxSize} exceeds the model's context length {hp.ContextLength}", isUsage: true);
            using var llama = loaded.CreateContext(new ContextOptions(ctxSize, Math.Max(1, parse.GetValue(batch)), kvType));

            ChatSession session;
            try { session = ChatSession.ForModel(loaded, llama, parse.GetValue(template), parse.GetValue(system)); }
            catch (ChatFormatException e) { throw new UserErrorException(e.Message); }

            var err = context.Error;
            err.WriteLine($"model: {loaded.Name} ({path}), {hp.Architecture}, {hp.BlockCount} layers, vocab {hp.VocabularySize}");
            if (loaded.HasRandomWeights) err.WriteLine("note: this model has RANDOM weights (the demo model); its text is meaningless but every op ran for real");
            err.WriteLine($"backend: {loaded.Schedule.Describe(kvType).TrimEnd().Replace("\n", "; ")}");
            err.WriteLine(RunCommand.KvCacheLine(llama, hp));
            err.WriteLine($"chat template: {session.Template.Name}; end of turn: {string.Join(", ", session.EndOfTurn.Order().Select(id => $"{loaded.Tokenizer.Vocabulary.Tokens[id]} ({id})"))}");
            err.WriteLine($"sampling: temp {settings.Temperature}, top-k {settings.TopK}, top-p {settings.TopP}, min-p {settings.MinP}, repeat-penalty {settings.RepeatPenalty} (last {settings.RepeatLastN}), seed {settings.Seed}");

            var sampler = new Sampler(settings);
            var options = new ChatGenerationOptions { MaxTokens = n < 0 ? int.MaxValue : n, ParseSpecialInMessages = parse.GetValue(parseSpecial) };
            var given = parse.GetValue(prompts) ?? [];
            return given.Length > 0
                ? Scripted(context, session, sampler, options, given)
                : Interactive(context, session, sampler, options);
        });
        return command;
    }

    /// <summary>Answers each -p message in order ("/reset" starts over, "/exit" stops).</summary>
    private static int Scripted(CliContext context, ChatSession session, Sampler sampler, ChatGenerationOptions options, string[] messages)
    {
        foreach (var message in messages)
        {
            if (Command(context, session, message) is { } stop)
            {
                if (stop) break;
                continue;
            }
            Answer(context, session, sampler, options, message, CancellationToken.None);
        }
        return ExitCodes.Success;
    }

    /// <summary>Reads messages from the console until /exit or end of input. Ctrl+C during an answer stops only that answer.</summary>
    private static int Interactive(CliContext context, ChatSession session, Sampler sampler, ChatGenerationOptions options)
    {
        context.Error.WriteLine("interactive chat: type a message; /reset starts over, /exit (or end of input) quits, Ctrl+C stops an answer; end a line with \\ to continue it");
        CancellationTokenSource? answering = null;
        void OnCancel(object? sender, ConsoleCancelEventArgs e)
        {
            var current = Volatile.Read(ref answering);
            if (current is null) return; // at the prompt, Ctrl+C ends the program as usual
            e.Cancel = true;
            current.Cancel();
        }
        Console.CancelKeyPress += OnCancel;
        try
        {
            while (true)
            {
                context.Output.Write("\n> ");
                context.Output.Flush();
                string? message = ReadMessage(Console.In);
                if (message is null) break;
                if (message.Trim().Length == 0) continue;
                if (Command(context, session, message) is { } stop)
                {
                    if (stop) break;
                    continue;
                }
                using var cts = new CancellationTokenSource();
                Volatile.Write(ref answering, cts);
                try { Answer(context, session, sampler, options, message, cts.Token); }
                catch (ContextOverflowException e)
                {
                    // The session can go on after /reset: say so instead of ending it.
                    context.Error.WriteLine($"error: {e.Message}");
                }
                finally { Volatile.Write(ref answering, null); }
            }
        }
        finally
        {
            Console.CancelKeyPress -= OnCancel;
        }
        return ExitCodes.Success;
    }

    /// <summary>One message; lines ending with a backslash continue on the next line.</summary>
    private static string? ReadMessage(TextReader input)
    {
        string? line = input.ReadLine();
        if (line is null) return null;
        var text = new System.Text.StringBuilder();
        while (line is not null && line.EndsWith('\\'))
        {
            text.Append(line, 0, line.Length - 1).Append('\n');
            line = input.ReadLine();
        }
        return text.Append(line).ToString();
    }

    /// <summary>true: /exit; false: another command was handled (/reset); null: not a command, a message.</summary>
    private static bool? Command(CliContext context, ChatSession session, string message)
    {
        switch (message.Trim())
        {
            case "/exit" or "/quit":
                return true;
            case "/reset":
                session.Reset();
                context.Error.WriteLine("[conversation reset]");
                return false;
            default:
                return null;
        }
    }

    private static void Answer(CliContext context, ChatSession session, Sampler sampler, ChatGenerationOptions options, string message, CancellationToken cancellation)
    {
        ChatReply reply;
        try
        {
            reply = session.Send(message, sampler, options, text => { context.Output.Write(text); context.Output.Flush(); }, cancellation);
        }
        catch (ChatFormatException e)
        {
            throw new UserErrorException(e.Message);
        }
        context.Output.WriteLine();
        context.Error.WriteLine(SpeedLine(reply, session));
    }

    /// <summary>"[prompt 40 tokens, 12 evaluated, 310.5 t/s | answer 25 tokens, 41.2 t/s | end of turn | context 77/4096]".</summary>
    internal static string SpeedLine(ChatReply r, ChatSession session)
    {
        static string Rate(double v) => v.ToString("F1", CultureInfo.InvariantCulture);
        string why = r.StopReason switch
        {
            ChatStopReason.EndOfTurn => "end of turn",
            ChatStopReason.StopSequence => "stop sequence",
            ChatStopReason.Length => "token limit (-n)",
            ChatStopReason.ContextFull => "context full (/reset or raise -c)",
            _ => "stopped (Ctrl+C)",
        };
        return $"[prompt {r.PromptTokens} tokens, {r.EvaluatedPromptTokens} evaluated, {Rate(r.PromptTokensPerSecond)} t/s | answer {r.GeneratedTokens} tokens, "
            + $"{Rate(r.GenerationTokensPerSecond)} t/s | {why} | context {session.CachedTokens}]";
    }
}

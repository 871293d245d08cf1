using System.CommandLine;
using System.Globalization;
using System.Net;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Inference;
using PluginEngine.Server;

namespace PluginEngine.Host.Commands;

/// <summary>
/// <c>pluginengine serve [-m MODEL] [--backend X] [-np N] [--host 127.0.0.1 --port 8080] [--api-key KEY]</c>: the
/// OpenAI-compatible HTTP server with its chat page at <c>/</c> (docs/serve.md). One model per process; runs until
/// SIGTERM or Ctrl+C, then shuts down gracefully (docs/deploy.md#graceful-shutdown).
/// </summary>
public static class ServeCommand
{
    public static Command Create(CliContext context)
    {
        var model = new ModelOptions();
        var sampling = new SamplingOptions();
        var host = new Option<string>("--host") { Description = "Address to listen on (default: loopback only; 0.0.0.0 for every interface)", DefaultValueFactory = _ => "127.0.0.1", HelpName = "ADDRESS" };
        var port = new Option<int>("--port") { Description = "TCP port (0: any free port, printed at start)", DefaultValueFactory = _ => 8080 };
        var apiKey = new Option<string?>("--api-key") { Description = "Require Authorization: Bearer KEY on /v1/ requests (environment PLUGINENGINE_API_KEY; the flag wins)", HelpName = "KEY" };
        var parallel = new Option<int>("--parallel", "-np") { Description = "Requests decoded together (slots); each has its own -c context", DefaultValueFactory = _ => 1 };
        var queue = new Option<int>("--queue") { Description = "Requests that may wait for a slot; more get HTTP 503", DefaultValueFactory = _ => 64 };
        var alias = new Option<string?>("--alias") { Description = "Model id in the API (default: the model file's name without .gguf)", HelpName = "NAME" };
        var template = new Option<string?>("--chat-template") { Description = $"Override the model's chat template: a built-in ({BuiltInChatTemplates.Names}) or a file holding a Jinja template", HelpName = "NAME|FILE" };
        var ctx = new Option<int>("--ctx-size", "-c") { Description = "Context of each slot: prompt + answer of one request (default: min(model's, 4096))" };
        var batch = new Option<int>("--batch-size", "-b") { Description = "Prompt tokens per forward pass", DefaultValueFactory = _ => 512 };
        var kv = new KvCacheOptions();
        var shutdown = new Option<string>("--shutdown-timeout") { Description = "On SIGTERM/Ctrl+C, how long in-flight requests may finish before they are cancelled (e.g. 10s, 500ms, 2m)", DefaultValueFactory = _ => "10s", HelpName = "DURATION" };

        var command = new Command("serve", "Serve a model over HTTP: the OpenAI API (chat and text completions, streamed), /health, /metrics and a chat page at /");
        model.AddTo(command);
        sampling.AddTo(command);
        foreach (var o in new Option[] { host, port, apiKey, parallel, queue, alias, template, ctx, batch }) command.Options.Add(o);
        kv.AddTo(command);
        command.Options.Add(shutdown);
        command.SetAction(parse =>
        {
            var settings = sampling.Resolve(parse);
            bool seedFixed = parse.GetValue(sampling.Seed) >= 0;
            if (!IPAddress.TryParse(parse.GetValue(host) is "localhost" ? "127.0.0.1" : parse.GetValue(host), out var address))
                throw new UserErrorException($"--host {parse.GetValue(host)}: not an IP address (127.0.0.1, ::1, 0.0.0.0 …)", isUsage: true);
            int portNumber = parse.GetValue(port);
            if (portNumber is < 0 or > 65535) throw new UserErrorException($"--port {portNumber}: must be 0..65535", isUsage: true);
            int slots = parse.GetValue(parallel);
            if (slots < 1) throw new UserErrorException($"-np {slots}: must be at least 1", isUsage: true);
            int queueCapacity = parse.GetValue(queue);
            if (queueCapacity < 0) throw new UserErrorException($"--queue {queueCapacity}: must be 0 or more", isUsage: true);
            var grace = ParseDuration(parse.GetValue(shutdown)!);
            string? key = parse.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("PLUGINENGINE_API_KEY");
            if (key is { Length: 0 }) key = null;

            var kvType = kv.Resolve(parse);
            using var loaded = model.LoadModel(parse, context, out string path, model.ResolveSplit(parse, kvCacheType: kvType));
            var hp = loaded.HyperParameters;
            int ctxSize = parse.GetValue(ctx) is > 0 and var c ? c : Math.Min(hp.ContextLength, 4096);
            if (ctxSize > hp.ContextLength) throw new UserErrorException($"--ctx-size {ctxSize} exceeds the model's context length {hp.ContextLength}", isUsage: true);
            var slotContext = new ContextOptions(ctxSize, Math.Max(1, parse.GetValue(batch)), kvType);

            Core.Serving.ICompletionScheduler scheduler;
            try { scheduler = SchedulerFactory.Create(loaded, slotContext, slots, queueCapacity); }
            catch (NotSupportedException e) { throw new UserErrorException(e.Message, isUsage: true); }
            using (scheduler)
            {
                // A model without a template (the demo model) is still served: chat uses chatml, and says so.
                string? templateName = parse.GetValue(template);
                if (templateName is null && !loaded.File.TryGet(ChatTemplate.MetadataKey, out _))
                {
                    templateName = "chatml";
                    context.Error.WriteLine($"note: the model has no chat template ({ChatTemplate.MetadataKey}); chat requests use the built-in chatml (--chat-template overrides)");
                }
                ServedModel served;
                try { served = ServedModel.For(loaded, scheduler, parse.GetValue(alias) ?? Path.GetFileNameWithoutExtension(path), templateName); }
                catch (ChatFormatException e) { throw new UserErrorException(e.Message); }

                var options = new ServerOptions
                {
                    Address = address, Port = portNumber, ApiKey = key, DefaultSampling = settings, DefaultSeedFixed = seedFixed, ShutdownTimeout = grace,
                };
                var err = context.Error;
                err.WriteLine($"model: {loaded.Name} ({path}), {hp.Architecture}, {hp.BlockCount} layers, vocab {hp.VocabularySize}; served as \"{served.Id}\"");
                if (loaded.HasRandomWeights) err.WriteLine("note: this model has RANDOM weights (the demo model); its text is meaningless but every op ran for real");
                err.WriteLine($"backend: {loaded.Schedule.Describe(kvType).TrimEnd().Replace("\n", "; ")}");
                err.WriteLine($"chat template: {served.Formatter.Template.Name}; slots: {scheduler.Slots} × context {scheduler.SlotContextSize}; queue: {queueCapacity}; api key: {(key is null ? "none" : "required")}");
                var server = OpenAiServer.Create(served, options);
                try
                {
                    try { server.StartAsync().GetAwaiter().GetResult(); }
                    catch (IOException e) { throw new UserErrorException($"--host {address} --port {portNumber}: cannot listen there: {e.Message}"); }
                    // Tests and scripts read this line for the address (with --port 0, the port that was picked).
                    err.WriteLine($"listening on {server.ListeningAddress} (chat page at /, OpenAI API at /v1/); SIGTERM or Ctrl+C stops (grace {grace.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s)");
                    err.Flush();
                    server.WaitForShutdownAsync().GetAwaiter().GetResult();
                    server.Drained.GetAwaiter().GetResult();
                    err.WriteLine("stopped");
                }
                finally
                {
                    server.DisposeAsync().AsTask().GetAwaiter().GetResult();
                }
            }
            return ExitCodes.Success;
        });
        return command;
    }

    /// <summary>"10s", "500ms", "2m", or plain seconds ("10").</summary>
    internal static TimeSpan ParseDuration(string text)
    {
        string t = text.Trim();
        (string number, double scale) = t.EndsWith("ms", StringComparison.Ordinal) ? (t[..^2], 0.001)
            : t.EndsWith('s') ? (t[..^1], 1.0)
            : t.EndsWith('m') ? (t[..^1], 60.0)
            : (t, 1.0);
        if (!double.TryParse(number, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || value < 0 || !double.IsFinite(value))
            throw new UserErrorException($"--shutdown-timeout {text}: not a duration (e.g. 10s, 500ms, 2m)", isUsage: true);
        return TimeSpan.FromSeconds(value * scale);
    }
}

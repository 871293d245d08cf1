using System.Net;
using PluginEngine.Core.Chat;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Sampling;
using PluginEngine.Core.Serving;

namespace PluginEngine.Server;

/// <summary>
/// The one model a server process serves (docs/deploy.md: one model per process): its API id, how its prompts are
/// formatted, the tokens that end an answer, and the scheduler that runs its completions. The server disposes none of it.
/// </summary>
/// <param name="Id">The id clients name in <c>"model"</c> and <c>/v1/models</c> lists.</param>
/// <param name="CreatedUnixSeconds">When the model was loaded (the <c>created</c> field of <c>/v1/models</c>).</param>
public sealed record ServedModel(string Id, ChatPromptFormatter Formatter, IReadOnlySet<int> EndTokens, ICompletionScheduler Scheduler,
    long CreatedUnixSeconds)
{
    /// <summary>The model's own formatter (template or override) and end-of-turn tokens, served as <paramref name="id"/>.</summary>
    public static ServedModel For(LoadedModel model, ICompletionScheduler scheduler, string id, string? templateOverride = null)
        => new(id, ChatPromptFormatter.ForModel(model, templateOverride), EndOfTurnTokens.FromModel(model.File, model.Tokenizer), scheduler,
            DateTimeOffset.UtcNow.ToUnixTimeSeconds());
}

/// <summary>How the server listens and behaves (the <c>serve</c> flags).</summary>
public sealed record ServerOptions
{
    /// <summary>Address to listen on; loopback unless told otherwise (docs/serve.md#flags).</summary>
    public IPAddress Address { get; init; } = IPAddress.Loopback;

    /// <summary>TCP port; 0 picks a free one (read it from <see cref="OpenAiServer.ListeningAddress"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>When set, every <c>/v1/</c> request must send <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }

    /// <summary>Sampling when a request does not say (the CLI's sampling flags).</summary>
    public SamplerSettings DefaultSampling { get; init; } = new();

    /// <summary>False: a request without <c>seed</c> gets a fresh random seed (the CLI's <c>--seed</c> was not given).</summary>
    public bool DefaultSeedFixed { get; init; }

    /// <summary>On SIGTERM/Ctrl+C: how long in-flight requests may go on before they are cancelled (docs/deploy.md#graceful-shutdown).</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PluginEngine.Extensions.AI;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a <see cref="PluginEngineChatClient"/> as the app's <see cref="IChatClient"/>.</summary>
public static class PluginEngineServiceCollectionExtensions
{
    /// <summary>
    /// Adds a singleton <see cref="IChatClient"/> that runs a GGUF model through PluginEngine. The model loads when the
    /// client is first used. Returns the <see cref="ChatClientBuilder"/> so middleware can be added
    /// (<c>.UseLogging()</c>, <c>.UseDistributedCache()</c>, <c>.UseOpenTelemetry()</c>).
    /// </summary>
    public static ChatClientBuilder AddPluginEngineChatClient(this IServiceCollection services, Action<PluginEngineChatClientOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        var options = new PluginEngineChatClientOptions();
        configure(options);
        return services.AddChatClient(sp => new PluginEngineChatClient(options, sp.GetService<ILoggerFactory>()));
    }
}

namespace PluginEngine.Abstractions;

/// <summary>An IBackendPlugin of another contracts version: no Probe/ConfigureServices, a different entry method.</summary>
public interface IBackendPlugin
{
    /// <summary>Backend name.</summary>
    string Name { get; }

    /// <summary>API version.</summary>
    int ApiVersion { get; }

    /// <summary>A member the real contracts do not have.</summary>
    bool Initialize(string pluginDirectory);
}

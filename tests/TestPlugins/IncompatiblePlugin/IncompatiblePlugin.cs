using PluginEngine.Abstractions;

namespace PluginEngine.TestPlugins;

/// <summary>Implements the other contracts' IBackendPlugin; against the host's contracts its type cannot load.</summary>
public sealed class IncompatiblePlugin : IBackendPlugin
{
    public string Name => "fake";

    public int ApiVersion => 1;

    public bool Initialize(string pluginDirectory) => true;
}

namespace PluginEngine.Core.Loading;

/// <summary>The host-import switch (docs/architecture.md#host-import-policy): auto (the default policy), forced on, or off.</summary>
public enum HostImportMode { Auto, On, Off }

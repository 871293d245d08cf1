namespace PluginEngine.Core.Loading;

/// <summary>The requested load options are contradictory or unsupported here.</summary>
public sealed class LoadOptionsException(string message) : Exception(message);

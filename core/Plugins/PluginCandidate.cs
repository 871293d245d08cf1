using PluginEngine.Abstractions;

namespace PluginEngine.Core.Plugins;

/// <summary>What became of one plugins.json entry.</summary>
public enum PluginState
{
    /// <summary>Loaded: its backend is available.</summary>
    Loaded,
    /// <summary>Tried and rejected; <see cref="PluginCandidate.Reason"/> says why.</summary>
    Rejected,
    /// <summary><c>"enabled": false</c> in plugins.json; never loaded.</summary>
    Disabled,
}

/// <summary>
/// The record of one plugins.json entry after loading: kept for every entry, loaded or not, so <c>backends</c>
/// and <c>-v</c> can show what was tried and why it was rejected.
/// </summary>
/// <param name="Name">Entry name from plugins.json.</param>
/// <param name="AssemblyPath">Absolute path of the plugin assembly.</param>
/// <param name="State">Outcome.</param>
/// <param name="Reason">Why it was rejected or disabled; for loaded plugins, what the probe found.</param>
/// <param name="Backend">Backend name the plugin reports (null when it never got that far).</param>
/// <param name="Score">Probe score (null when the probe never ran or threw).</param>
/// <param name="ApiVersion">Plugin API major version the plugin reports (null when it could not be loaded).</param>
/// <param name="Devices">Devices of a loaded plugin; empty otherwise.</param>
/// <param name="ApiMinorVersion">Plugin API minor version the plugin reports (null when it could not be loaded).</param>
public sealed record PluginCandidate(
    string Name,
    string AssemblyPath,
    PluginState State,
    string Reason,
    string? Backend,
    int? Score,
    int? ApiVersion,
    IReadOnlyList<IBackendDevice> Devices,
    int? ApiMinorVersion = null)
{
    /// <summary>"major.minor" as reported, or null when the plugin never got that far.</summary>
    public string? ApiVersionText => ApiVersion is { } major ? PluginApi.Format(major, ApiMinorVersion ?? 0) : null;
}

/// <summary>A loaded backend: the winning candidate for its name, its plugin entry object, services and devices.</summary>
/// <param name="Name">Backend name (e.g. "cpu").</param>
/// <param name="Candidate">The plugins.json entry that provides it.</param>
/// <param name="Plugin">The plugin's entry object.</param>
/// <param name="Services">The plugin's service provider (its own DI container, with the host's logging and its <see cref="PluginContext"/>).</param>
/// <param name="Devices">Its devices (at least one).</param>
public sealed record LoadedBackend(string Name, PluginCandidate Candidate, IBackendPlugin Plugin, IServiceProvider Services, IReadOnlyList<IBackendDevice> Devices);

/// <summary>A backend was asked for by name but is not loaded; the message lists what is available and, if it was tried, why it was rejected.</summary>
public sealed class BackendNotAvailableException(string backend, string message) : Exception(message)
{
    /// <summary>The backend that was asked for.</summary>
    public string Backend { get; } = backend;
}

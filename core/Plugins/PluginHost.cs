using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Plugins;

/// <summary>
/// Loads the backend plugins listed in a <see cref="PluginConfiguration"/> and keeps a <see cref="PluginCandidate"/>
/// for every entry. Per enabled entry: resolve the assembly, load it, check its API version, probe it; then, per
/// backend name, the best-scoring probe is configured (its own <see cref="ServiceCollection"/> seeded with the
/// host's <see cref="ILoggerFactory"/> and the <see cref="PluginContext"/>) and must register at least one
/// <see cref="IBackendDevice"/>. If the winner fails, the next best is tried. Every failure a plugin can cause is
/// caught and becomes a rejection reason: nothing a plugin does may crash the host.
/// Plugins are never unloaded (native GPU runtimes cannot be unloaded safely), so a host lives for the process.
/// </summary>
public sealed class PluginHost
{
    private readonly List<PluginCandidate> _candidates;
    private readonly Dictionary<string, LoadedBackend> _backends;

    private PluginHost(PluginConfiguration configuration, List<PluginCandidate> candidates, Dictionary<string, LoadedBackend> backends)
    {
        Configuration = configuration;
        _candidates = candidates;
        _backends = backends;
    }

    /// <summary>The configuration the plugins were loaded from.</summary>
    public PluginConfiguration Configuration { get; }

    /// <summary>One record per plugins.json entry, in file order.</summary>
    public IReadOnlyList<PluginCandidate> Candidates => _candidates;

    /// <summary>Loaded backends by backend name.</summary>
    public IReadOnlyDictionary<string, LoadedBackend> Backends => _backends;

    /// <summary>Loads every enabled plugin of <paramref name="configuration"/>. Never throws for a plugin's failure.</summary>
    public static PluginHost Load(PluginConfiguration configuration, ILoggerFactory? loggers = null)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        loggers ??= NullLoggerFactory.Instance;
        var log = loggers.CreateLogger<PluginHost>();
        var loader = new PluginAssemblyLoader();
        log.LogDebug("Plugin configuration: {File} ({Source})", configuration.FilePath, configuration.Source);

        // Phase 1: load, version-check and probe each entry. Slots keep file order for Candidates.
        var slots = new Attempt[configuration.Plugins.Count];
        for (int i = 0; i < slots.Length; i++)
            slots[i] = Probe(configuration.Plugins[i], loader, loggers, log);

        // Phase 2: per backend name, configure the best probe first; the rest are outscored (or tried if it fails).
        var backends = new Dictionary<string, LoadedBackend>(StringComparer.Ordinal);
        var groups = slots.Where(a => a.Candidate is null).GroupBy(a => a.Plugin!.Name, StringComparer.Ordinal);
        foreach (var group in groups)
        {
            // Highest score first; ties go to the earlier entry in the file (OrderByDescending is stable).
            var ranked = group.OrderByDescending(a => a.Score).ToList();
            Attempt? winner = null;
            foreach (var attempt in ranked)
            {
                if (winner is not null)
                {
                    attempt.Reject($"outscored by '{winner.Entry.Name}' (score {winner.Score} > {attempt.Score}) for backend '{group.Key}'");
                    continue;
                }
                if (Configure(attempt, log) is { } loaded)
                {
                    winner = attempt;
                    backends.Add(group.Key, loaded);
                }
            }
        }

        var candidates = slots.Select(a => a.Candidate!).ToList();
        foreach (var c in candidates)
        {
            if (c.State == PluginState.Rejected) log.LogInformation("Plugin '{Name}' rejected: {Reason} ({Path})", c.Name, c.Reason, c.AssemblyPath);
            else if (c.State == PluginState.Loaded) log.LogInformation("Plugin '{Name}' loaded: backend '{Backend}', score {Score}, {Count} device(s): {Reason}", c.Name, c.Backend, c.Score, c.Devices.Count, c.Reason);
            else log.LogDebug("Plugin '{Name}' disabled in {File}", c.Name, configuration.FilePath);
        }
        return new PluginHost(configuration, candidates, backends);
    }

    /// <summary>The loaded backend called <paramref name="name"/>.</summary>
    /// <exception cref="BackendNotAvailableException">It is not loaded; the message lists the available backends and, if it was tried, why not.</exception>
    public LoadedBackend GetBackend(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_backends.TryGetValue(name, out var backend)) return backend;
        string available = _backends.Count == 0 ? "none" : string.Join(", ", _backends.Keys.Order(StringComparer.Ordinal));
        var tried = _candidates.Where(c => c.Backend == name || c.Name == name).ToList();
        string why = tried.Count == 0
            ? $"no plugin in {Configuration.FilePath} provides it"
            : string.Join("; ", tried.Select(c => $"plugin '{c.Name}' {c.State.ToString().ToLowerInvariant()}: {c.Reason}"));
        throw new BackendNotAvailableException(name, $"backend '{name}' is not available ({why}); available backends: {available}");
    }

    /// <summary>The CPU backend (<see cref="PluginConfiguration.CpuBackend"/>): non-offloaded layers and op fallbacks run there.</summary>
    public LoadedBackend GetCpu() => GetBackend(PluginConfiguration.CpuBackend);

    /// <summary>
    /// The backend to use when none is named: the first loaded backend in the configuration's preference order;
    /// if none of those loaded, the loaded backend with the highest probe score.
    /// </summary>
    /// <exception cref="BackendNotAvailableException">No backend loaded at all.</exception>
    public LoadedBackend SelectDefault()
    {
        foreach (string name in Configuration.Preference)
            if (_backends.TryGetValue(name, out var preferred)) return preferred;
        var best = _backends.Values.OrderByDescending(b => b.Candidate.Score).ThenBy(b => b.Name, StringComparer.Ordinal).FirstOrDefault();
        if (best is not null) return best;
        string reasons = _candidates.Count == 0 ? "no plugins are listed" : string.Join("; ", _candidates.Select(c => $"'{c.Name}': {c.Reason}"));
        throw new BackendNotAvailableException("", $"no backend could be loaded from {Configuration.FilePath} ({reasons})");
    }

    private static Attempt Probe(PluginEntry entry, PluginAssemblyLoader loader, ILoggerFactory loggers, ILogger log)
    {
        var attempt = new Attempt(entry);
        if (!entry.Enabled)
        {
            attempt.Candidate = new PluginCandidate(entry.Name, entry.AssemblyPath, PluginState.Disabled, "disabled in plugins.json", null, null, null, []);
            return attempt;
        }

        log.LogDebug("Plugin '{Name}': loading {Path}", entry.Name, entry.AssemblyPath);
        try
        {
            attempt.Plugin = loader.CreateEntry(entry.AssemblyPath);
        }
        catch (PluginLoadException e)
        {
            return attempt.Reject(e.Message);
        }
        catch (Exception e)
        {
            return attempt.Reject($"failed to load: {Describe(e)}");
        }

        // Each member call is guarded: a plugin compiled against other contracts can fail on first call (MissingMethodException).
        try
        {
            attempt.ApiVersion = attempt.Plugin.ApiVersion;
            attempt.ApiMinorVersion = attempt.Plugin.ApiMinorVersion; // a 1.0 plugin lacks the member: the contracts' default says 0
            attempt.Backend = attempt.Plugin.Name;
        }
        catch (Exception e)
        {
            return attempt.Reject($"incompatible with host contracts: {Describe(e)}");
        }
        if (Negotiate(attempt.ApiVersion.Value, attempt.ApiMinorVersion.Value) is { } refusal)
            return attempt.Reject(refusal);
        if (string.IsNullOrWhiteSpace(attempt.Backend))
            return attempt.Reject("the plugin reports an empty backend name");

        string directory = Path.GetDirectoryName(entry.AssemblyPath)!;
        attempt.Context = new PluginContext(entry.Name, directory, entry.Options, loggers);
        ProbeResult? probe;
        try
        {
            probe = attempt.Plugin.Probe(attempt.Context);
        }
        catch (Exception e)
        {
            return attempt.Reject($"probe threw {Describe(e)}");
        }
        if (probe is null) return attempt.Reject("probe returned null");
        attempt.Score = probe.Score;
        attempt.ProbeReason = probe.Reason ?? "";
        log.LogDebug("Plugin '{Name}': backend '{Backend}', API {Api}, probe score {Score}: {Reason}", entry.Name, attempt.Backend, attempt.ApiVersion, probe.Score, probe.Reason);
        if (!probe.IsAvailable)
            return attempt.Reject(string.IsNullOrWhiteSpace(probe.Reason) ? "probe: unavailable (no reason given)" : $"probe: {probe.Reason}");
        return attempt; // Candidate stays null: still in the running for its backend name.
    }

    /// <summary>
    /// Null when a plugin compiled against API <paramref name="major"/>.<paramref name="minor"/> can run in this host; else why
    /// not, naming both versions. Same major, minor up to the host's: accepted (the core calls only the members that minor
    /// has; see <see cref="PluginApiVersions"/>). Another major, or a newer minor (members this host does not have): refused.
    /// </summary>
    public static string? Negotiate(int major, int minor)
    {
        string plugin = PluginApi.Format(major, minor), host = PluginApi.Format(PluginApi.Major, PluginApi.Minor);
        if (major > PluginApi.Major)
            return $"plugin API version {plugin} is newer than the host's {host}: a different major version is incompatible; use a host (pluginengine) with API {major}.x";
        if (major < PluginApi.Major)
            return $"plugin API version {plugin} is older than the host's {host}: a different major version is incompatible; rebuild the plugin against PluginEngine.Abstractions {PluginApi.Major}.x";
        if (minor > PluginApi.Minor)
            return $"plugin API version {plugin} is newer than the host's {host}: the plugin may use members this host does not have; use a host with API {plugin} or later";
        if (minor < 0) return $"plugin API version {plugin} is not a valid version (negative minor); host {host}";
        return null;
    }

    private static LoadedBackend? Configure(Attempt attempt, ILogger log)
    {
        var services = new ServiceCollection();
        services.AddSingleton(attempt.Context!.Loggers);
        services.TryAdd(ServiceDescriptor.Singleton(typeof(ILogger<>), typeof(Logger<>)));
        services.AddSingleton(attempt.Context);
        services.AddSingleton(attempt.Context.Options);

        IServiceProvider provider;
        IReadOnlyList<IBackendDevice> devices;
        try
        {
            attempt.Plugin!.ConfigureServices(services, attempt.Context);
        }
        catch (Exception e)
        {
            attempt.Reject($"ConfigureServices threw {Describe(e)}");
            return null;
        }
        try
        {
            provider = services.BuildServiceProvider();
            devices = provider.GetServices<IBackendDevice>().ToList();
        }
        catch (Exception e)
        {
            attempt.Reject($"creating its devices failed: {Describe(e)}");
            return null;
        }
        if (devices.Count == 0)
        {
            attempt.Reject("the plugin registered no IBackendDevice (zero devices)");
            return null;
        }
        // Read each description once here, guarded, so later users (commands, the loader) never meet a throwing or null one.
        for (int i = 0; i < devices.Count; i++)
        {
            try
            {
                if (devices[i] is null || devices[i].Description is null || devices[i].Buffers is null)
                {
                    attempt.Reject($"device {i} has no description or buffer provider");
                    return null;
                }
            }
            catch (Exception e)
            {
                attempt.Reject($"device {i} failed to describe itself: {Describe(e)}");
                return null;
            }
        }

        attempt.Candidate = new PluginCandidate(attempt.Entry.Name, attempt.Entry.AssemblyPath, PluginState.Loaded, attempt.ProbeReason,
                                                attempt.Backend, attempt.Score, attempt.ApiVersion, devices, attempt.ApiMinorVersion);
        foreach (var device in devices) PluginApiVersions.Record(device, attempt.ApiMinorVersion!.Value);
        log.LogDebug("Plugin '{Name}': {Count} device(s)", attempt.Entry.Name, devices.Count);
        return new LoadedBackend(attempt.Backend!, attempt.Candidate, attempt.Plugin, provider, devices);
    }

    private static string Describe(Exception e)
    {
        if (e is System.Reflection.TargetInvocationException { InnerException: { } inner }) e = inner;
        return $"{e.GetType().Name}: {e.Message}";
    }

    /// <summary>Mutable working state of one entry while loading; becomes a <see cref="PluginCandidate"/>.</summary>
    private sealed class Attempt(PluginEntry entry)
    {
        public PluginEntry Entry { get; } = entry;
        public IBackendPlugin? Plugin { get; set; }
        public PluginContext? Context { get; set; }
        public string? Backend { get; set; }
        public int? ApiVersion { get; set; }
        public int? ApiMinorVersion { get; set; }
        public int? Score { get; set; }
        public string ProbeReason { get; set; } = "";
        public PluginCandidate? Candidate { get; set; }

        public Attempt Reject(string reason)
        {
            Candidate = new PluginCandidate(Entry.Name, Entry.AssemblyPath, PluginState.Rejected, reason, Backend, Score, ApiVersion, [], ApiMinorVersion);
            return this;
        }
    }
}

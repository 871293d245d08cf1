using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;

namespace PluginEngine.Host;

/// <summary>
/// What a command says about plugins.json after loading the plugins, so configuration is never silently wrong:
/// an option key the plugin never read (a misspelling) is an error for the backends the command uses and a warning
/// for the others; a plugin rejected for any reason other than its probe finding no device here (a bad option value,
/// a failed load) is a warning; a preferred backend skipped because its probe found nothing gets a one-line note.
/// </summary>
public static class PluginDiagnostics
{
    /// <summary>
    /// Reports on <paramref name="error"/>; throws <see cref="PluginOptionException"/> for unknown options of a backend in
    /// <paramref name="used"/>. <paramref name="used"/>[0] is the backend the command runs on.
    /// </summary>
    public static void Report(PluginHost host, TextWriter error, IReadOnlyList<LoadedBackend> used)
    {
        var config = host.Configuration;
        foreach (var backend in host.Backends.Values.OrderBy(b => b.Name, StringComparer.Ordinal))
        {
            if (config.Plugins.FirstOrDefault(p => p.Name == backend.Candidate.Name) is not { } entry) continue;
            var unread = entry.Options.UnreadKeys();
            if (unread.Count == 0) continue;
            string message = UnknownOptions(config.FilePath, entry, unread);
            if (used.Any(u => u.Name == backend.Name)) throw new PluginOptionException(message);
            error.WriteLine($"warning: {message}");
        }

        foreach (var c in host.Candidates)
        {
            if (c.State != PluginState.Rejected) continue;
            // A probe that finds no device here is normal (no GPU); one that fails on an option value is a config mistake.
            string? optionsPath = config.Plugins.FirstOrDefault(p => p.Name == c.Name)?.Options.JsonPath;
            bool optionProblem = optionsPath is not null && c.Reason.Contains(optionsPath, StringComparison.Ordinal);
            bool probeFoundNothing = c.Score == 0 && !optionProblem;
            bool outscored = c.Reason.StartsWith("outscored", StringComparison.Ordinal);
            if (!probeFoundNothing && !outscored)
                error.WriteLine($"warning: plugin '{c.Name}' ({config.FilePath}) was rejected: {c.Reason}");
        }

        // Backends preferred over the one in use that could not run: say so once, so a fallback is never silent.
        var running = used[0].Name;
        foreach (string preferred in config.Preference.TakeWhile(p => p != running))
        {
            var rejected = host.Candidates.Where(c => (c.Backend ?? c.Name) == preferred && c.State == PluginState.Rejected && c.Score == 0
                && !c.Reason.Contains("$.plugins", StringComparison.Ordinal)).ToList();
            if (rejected.Count > 0 && !host.Backends.ContainsKey(preferred))
                error.WriteLine($"note: preferred backend '{preferred}' is not available here ({rejected[0].Reason}); using '{running}'");
        }
    }

    /// <summary>
    /// Unknown options of plugins that loaded, as warnings (for <c>backends</c>, which lists rather than runs).
    /// </summary>
    public static void WarnUnknownOptions(PluginHost host, TextWriter error)
    {
        foreach (var backend in host.Backends.Values.OrderBy(b => b.Name, StringComparer.Ordinal))
            if (host.Configuration.Plugins.FirstOrDefault(p => p.Name == backend.Candidate.Name) is { } entry && entry.Options.UnreadKeys() is { Count: > 0 } unread)
                error.WriteLine($"warning: {UnknownOptions(host.Configuration.FilePath, entry, unread)}");
    }

    private static string UnknownOptions(string file, PluginEntry entry, IReadOnlyList<string> unread)
    {
        var known = entry.Options.KeysRead;
        string paths = string.Join(", ", unread.Select(k => $"{entry.Options.JsonPath}.{k}"));
        string reads = known.Count == 0 ? "it reads no options" : $"it reads: {string.Join(", ", known)}";
        return $"{file}: {paths}: unknown option{(unread.Count > 1 ? "s" : "")} for plugin '{entry.Name}' ({reads})";
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Conformance;

/// <summary>
/// The backends under test: every enabled entry of the plugin list other than the CPU reference (or only those named in
/// <c>PLUGINENGINE_CONFORMANCE_BACKENDS</c>, comma-separated). The plugin list is the file named by
/// <c>PLUGINENGINE_PLUGINS</c> (what <c>pluginengine conformance --plugins FILE</c> sets), else the first plugins.json
/// in or above the test binary's folder; it must have a <c>cpu</c> entry, the reference. Names come from the file alone
/// (cheap, for test discovery); the plugins themselves are loaded once, on first use, by one <see cref="PluginHost"/>
/// shared by every test.
/// </summary>
public static class ConformanceBackends
{
    /// <summary>Backend name of the reference every other backend is compared with.</summary>
    public const string ReferenceBackend = "cpu";

    /// <summary>Environment variable restricting the candidates to these plugins.json entry names (comma-separated).</summary>
    public const string BackendsVariable = "PLUGINENGINE_CONFORMANCE_BACKENDS";

    private static readonly Lazy<PluginConfiguration> Configuration = new(() => LocateConfiguration(
        Environment.GetEnvironmentVariable(PluginConfiguration.EnvironmentVariable), AppContext.BaseDirectory));

    /// <summary>The plugin list the kit uses: <paramref name="environmentValue"/> (PLUGINENGINE_PLUGINS) when set, else the first plugins.json at or above <paramref name="binaryDirectory"/>.</summary>
    public static PluginConfiguration LocateConfiguration(string? environmentValue, string binaryDirectory)
    {
        if (!string.IsNullOrWhiteSpace(environmentValue))
        {
            string named = Path.GetFullPath(environmentValue);
            if (!File.Exists(named))
                throw new InvalidOperationException($"{named}: file not found (named by the {PluginConfiguration.EnvironmentVariable} environment variable)");
            return PluginConfiguration.Load(named, PluginConfigSource.EnvironmentVariable);
        }
        string? path = PluginConfigLocator.FindUpwards(binaryDirectory, PluginConfiguration.FileName)
            ?? throw new InvalidOperationException($"no {PluginConfiguration.FileName} above {binaryDirectory} and {PluginConfiguration.EnvironmentVariable} is not set: " +
                                                   "the conformance kit needs a plugin list with your backend and the cpu reference");
        return PluginConfiguration.Load(path);
    }

    /// <summary>The plugin list in use (for messages).</summary>
    public static string ConfigurationFile => Configuration.Value.FilePath;

    /// <summary>Whether the plugin list has an enabled entry called <paramref name="entryName"/> (per-backend tests skip otherwise).</summary>
    public static bool IsConfigured(string entryName) => Configuration.Value.Plugins.Any(p => p.Enabled && p.Name == entryName);

    private static readonly Lazy<PluginHost> Host = new(() => PluginHost.Load(Configuration.Value));

    /// <summary>plugins.json entry names of the candidates (MemberData source: one test instance per candidate).</summary>
    public static TheoryData<string> Candidates
    {
        get
        {
            var data = new TheoryData<string>();
            var only = Environment.GetEnvironmentVariable(BackendsVariable)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            foreach (var entry in Configuration.Value.Plugins)
                if (entry.Enabled && entry.Name != ReferenceBackend && (only is null || only.Length == 0 || only.Contains(entry.Name))) data.Add(entry.Name);
            return data;
        }
    }

    /// <summary>The CPU reference device.</summary>
    public static IBackendDevice Reference => Host.Value.Backends.TryGetValue(ReferenceBackend, out var cpu) ? cpu.Devices[0]
        : throw new InvalidOperationException($"{Configuration.Value.FilePath}: the conformance kit compares every backend with the '{ReferenceBackend}' reference, which is not loaded " +
                                              $"({string.Join("; ", Host.Value.Candidates.Where(c => c.Name == ReferenceBackend).Select(c => c.Reason).DefaultIfEmpty("no entry named cpu"))})");

    /// <summary>
    /// The first device of the candidate named <paramref name="entryName"/>; skips the calling test with the probe's
    /// (or loader's) reason when it is not available here.
    /// </summary>
    public static IBackendDevice Require(string entryName)
    {
        var candidate = Host.Value.Candidates.FirstOrDefault(c => c.Name == entryName)
            ?? throw new InvalidOperationException($"plugins.json has no entry '{entryName}'");
        if (candidate.State != PluginState.Loaded || candidate.Devices.Count == 0)
            Assert.Skip($"backend '{entryName}' is not available: {candidate.State.ToString().ToLowerInvariant()}: {candidate.Reason}");
        return candidate.Devices[0];
    }

    /// <summary>Skips the calling test when <paramref name="queue"/> does not implement <paramref name="op"/> for <paramref name="type"/>.</summary>
    public static void RequireOp(IComputeQueue queue, ComputeOp op, GgmlType type)
    {
        if (!queue.Supports(op, type))
            Assert.Skip($"{queue.Device.Description.Backend} does not support {op} for {type} (Supports() = false; the core runs it on the CPU)");
    }
}

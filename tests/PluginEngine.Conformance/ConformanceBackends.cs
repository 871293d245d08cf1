using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;
using Xunit;

namespace PluginEngine.Conformance;

/// <summary>
/// The backends under test: every enabled entry of the repository's plugins.json other than the CPU reference.
/// Names come from the file alone (cheap, for test discovery); the plugins themselves are loaded once, on first use,
/// by one <see cref="PluginHost"/> shared by every test.
/// </summary>
public static class ConformanceBackends
{
    /// <summary>Backend name of the reference every other backend is compared with.</summary>
    public const string ReferenceBackend = "cpu";

    private static readonly Lazy<PluginConfiguration> Configuration = new(() =>
    {
        string? path = PluginConfigLocator.FindUpwards(AppContext.BaseDirectory, PluginConfiguration.FileName)
            ?? throw new InvalidOperationException($"no {PluginConfiguration.FileName} above {AppContext.BaseDirectory}: the conformance kit runs against the repository's plugin list");
        return PluginConfiguration.Load(path);
    });

    private static readonly Lazy<PluginHost> Host = new(() => PluginHost.Load(Configuration.Value));

    /// <summary>plugins.json entry names of the candidates (MemberData source: one test instance per candidate).</summary>
    public static TheoryData<string> Candidates
    {
        get
        {
            var data = new TheoryData<string>();
            foreach (var entry in Configuration.Value.Plugins)
                if (entry.Enabled && entry.Name != ReferenceBackend) data.Add(entry.Name);
            return data;
        }
    }

    /// <summary>The CPU reference device.</summary>
    public static IBackendDevice Reference => Host.Value.GetBackend(ReferenceBackend).Devices[0];

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

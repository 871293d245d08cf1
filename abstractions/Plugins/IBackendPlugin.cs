using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace PluginEngine.Abstractions;

/// <summary>
/// The plugin API version this contracts assembly defines: <see cref="Major"/>.<see cref="Minor"/>.
/// A plugin reports the version it was compiled against (<c>ApiVersion =&gt; PluginApi.Major</c> and
/// <c>ApiMinorVersion =&gt; PluginApi.Minor</c>: both constants are inlined into the plugin at compile time).
/// The host accepts the same major with a minor up to its own, and refuses any other major (and a newer minor,
/// whose members the host would not have) with a message naming both versions. See plugins/README.md (API versions).
/// </summary>
/// <remarks>
/// <para>Rule for changing the contracts: adding a member is a minor bump, and the member must be a default interface
/// member (or a virtual with a default body) whose default is what a plugin of the previous minor means; the core decides
/// whether to call it from the plugin's negotiated minor, never by reflection. Removing or changing a member is a major bump.</para>
/// <para>History:</para>
/// <list type="bullet">
/// <item>1.0: the first API.</item>
/// <item>1.1: <see cref="IComputeQueue.RopeWithFactors"/> and <see cref="ComputeOp.RopeFrequencyFactors"/> (a 1.0 plugin's RoPE with
/// frequency factors runs on the CPU, whatever its <see cref="IComputeQueue.Supports"/> says); <see cref="IBackendPlugin.ApiMinorVersion"/>;
/// <see cref="PluginContext.CacheDirectory"/>; <see cref="PluginOptions.GetInt64"/> and <see cref="PluginOptions.GetDouble"/>;
/// <see cref="HostMemoryBuffer"/> and <see cref="BufferProviderBase"/>; the capability flags nothing read (Async = 4,
/// Graphs = 16, OwnedBuffers = 1) removed: every device must allocate owned buffers, and those bits are ignored.</item>
/// <item>1.2: <see cref="IComputeQueue.CopyTo"/> (a device-to-device copy between two queues of one plugin; default false: the core
/// copies through host memory, as for 1.0 and 1.1 plugins);
/// and multi-sequence batches: <see cref="SequenceSegment"/>, <see cref="IComputeQueue.RopeAndStoreKvSegments"/> and
/// <see cref="IComputeQueue.AttentionSegments"/>, whose defaults loop over the segments with the per-sequence ops (so a 1.0 or
/// 1.1 plugin runs batches unchanged).</item>
/// <item>1.3: <see cref="IComputeQueue.MatMulRopeAndStoreKv"/> (the q/k/v projections, RoPE and the cache store as one fused op; its
/// default runs <see cref="IComputeQueue.MatMulShared"/> then <see cref="IComputeQueue.RopeAndStoreKv"/>, which is what the core
/// calls on a plugin of an older minor).</item>
/// </list>
/// </remarks>
public static class PluginApi
{
    /// <summary>Changes only when plugins compiled against an older contracts assembly can no longer work.</summary>
    public const int Major = 1;

    /// <summary>Grows by one with each release of the contracts that adds members (see the history above).</summary>
    public const int Minor = 3;

    /// <summary>The major version (what <see cref="IBackendPlugin.ApiVersion"/> has always returned).</summary>
    public const int Version = Major;

    /// <summary>"major.minor".</summary>
    public static string Format(int major, int minor) => $"{major}.{minor}";
}

/// <summary>
/// The one entry type a backend plugin assembly exposes (a public non-abstract class with a public
/// parameterless constructor). The host creates it, checks <see cref="ApiVersion"/>, calls
/// <see cref="Probe"/>, and if the probe scores above zero calls <see cref="ConfigureServices"/> and
/// resolves every registered <see cref="IBackendDevice"/>.
/// </summary>
public interface IBackendPlugin
{
    /// <summary>Backend name users select with <c>--backend</c> (lowercase, e.g. "cpu", "cuda", "opencl").</summary>
    string Name { get; }

    /// <summary>The <see cref="PluginApi.Major"/> version this plugin was compiled against. Implement as <c>=&gt; PluginApi.Major</c>.</summary>
    int ApiVersion { get; }

    /// <summary>
    /// The <see cref="PluginApi.Minor"/> version this plugin was compiled against. Implement as <c>=&gt; PluginApi.Minor</c>.
    /// Default: 0 — a plugin compiled before this member existed (API 1.0) does not have it, and is a 1.0 plugin.
    /// </summary>
    int ApiMinorVersion => 0;

    /// <summary>
    /// Can this backend run here? Resolve native libraries and enumerate devices; never throw for a
    /// missing library or device — return <see cref="ProbeResult.Unavailable"/> with the reason
    /// (e.g. "libcuda.so.1 not found"). Higher scores win when several plugins offer the same backend name.
    /// </summary>
    ProbeResult Probe(PluginContext context);

    /// <summary>Registers this backend's services: at least one <see cref="IBackendDevice"/>.</summary>
    void ConfigureServices(IServiceCollection services, PluginContext context);
}

/// <summary>Outcome of a probe: score 0 means "cannot run here", with the reason.</summary>
/// <param name="Score">0 = unavailable; larger is better (CPU reference uses 10, GPUs 100).</param>
/// <param name="Reason">Why (for 0) or what was found (for &gt; 0).</param>
public sealed record ProbeResult(int Score, string Reason)
{
    /// <summary>True when the backend can run.</summary>
    public bool IsAvailable => Score > 0;

    /// <summary>The backend cannot run here.</summary>
    public static ProbeResult Unavailable(string reason) => new(0, reason);

    /// <summary>The backend can run here.</summary>
    public static ProbeResult Available(int score, string description) => new(Math.Max(1, score), description);
}

/// <summary>What the host hands a plugin: its configuration and the host's logging.</summary>
/// <param name="PluginName">Name of the entry in plugins.json.</param>
/// <param name="PluginDirectory">Folder the plugin assembly was loaded from (for native libraries shipped beside it).</param>
/// <param name="Options">Options from plugins.json.</param>
/// <param name="Loggers">Host logging.</param>
public sealed record PluginContext(string PluginName, string PluginDirectory, PluginOptions Options, ILoggerFactory Loggers)
{
    /// <summary>
    /// A folder this plugin may keep files in between runs (compiled kernels, tuning results), one per plugins.json entry:
    /// <c>$PLUGINENGINE_CACHE/&lt;entry&gt;</c>, else <c>$XDG_CACHE_HOME/pluginengine/&lt;entry&gt;</c>, else
    /// <c>~/.cache/pluginengine/&lt;entry&gt;</c>. The host does not create it: a plugin creates it on first write
    /// (<see cref="Directory.CreateDirectory(string)"/>) and treats a failure as "no cache". Since API 1.1; default (a context
    /// built without it): the same rule for <see cref="PluginName"/>.
    /// </summary>
    public string CacheDirectory { get; init; } = DefaultCacheDirectory(PluginName);

    /// <summary>The cache folder rule of <see cref="CacheDirectory"/> for an entry called <paramref name="pluginName"/>.</summary>
    public static string DefaultCacheDirectory(string pluginName)
    {
        string? root = Environment.GetEnvironmentVariable("PLUGINENGINE_CACHE");
        if (string.IsNullOrWhiteSpace(root))
        {
            string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            root = Path.Combine(string.IsNullOrWhiteSpace(xdg) ? Path.Combine(string.IsNullOrEmpty(home) ? Path.GetTempPath() : home, ".cache") : xdg, "pluginengine");
        }
        return Path.Combine(root, string.IsNullOrWhiteSpace(pluginName) ? "plugin" : pluginName);
    }
}

/// <summary>One backend device, as registered by a plugin.</summary>
public interface IBackendDevice
{
    /// <summary>Static facts.</summary>
    DeviceDescription Description { get; }

    /// <summary>The device's buffer type.</summary>
    IBufferProvider Buffers { get; }

    /// <summary>
    /// Creates an op queue on this device (one per model context). Default: null — the device only holds
    /// buffers and every op runs elsewhere.
    /// </summary>
    IComputeQueue? CreateQueue() => null;
}

/// <summary>
/// A plugin's options from plugins.json (<c>plugins[i].options</c>), as scalar strings. Typed getters
/// throw <see cref="PluginOptionException"/> naming the JSON path and the expected type.
/// Every getter records the key it was asked for, so the host can report keys the plugin never read (a misspelled
/// option) with <see cref="UnreadKeys"/> once the plugin has probed, configured its services and created its devices.
/// </summary>
public sealed class PluginOptions
{
    private readonly IReadOnlyDictionary<string, string> _values;
    private readonly HashSet<string> _keysRead = new(StringComparer.Ordinal);
    private bool _enumerated;

    /// <summary>Creates options; <paramref name="jsonPath"/> is where they came from (e.g. <c>$.plugins[0].options</c>).</summary>
    public PluginOptions(IReadOnlyDictionary<string, string>? values = null, string jsonPath = "$.options")
    {
        _values = values ?? new Dictionary<string, string>();
        JsonPath = jsonPath;
    }

    /// <summary>JSON path of the options object.</summary>
    public string JsonPath { get; }

    /// <summary>Every option, as given. A plugin that reads this has seen every key, so none is reported as unread.</summary>
    public IReadOnlyDictionary<string, string> Values
    {
        get
        {
            lock (_keysRead) _enumerated = true;
            return _values;
        }
    }

    /// <summary>The keys a getter was asked for so far (present or not), in sorted order.</summary>
    public IReadOnlyList<string> KeysRead
    {
        get { lock (_keysRead) return _keysRead.Order(StringComparer.Ordinal).ToArray(); }
    }

    /// <summary>
    /// Keys given in plugins.json that no getter asked for (and <see cref="Values"/> was never read): options this plugin
    /// does not know, usually a misspelling. Meaningful once the plugin has configured its services and devices.
    /// </summary>
    public IReadOnlyList<string> UnreadKeys()
    {
        lock (_keysRead)
            return _enumerated ? [] : _values.Keys.Where(k => !_keysRead.Contains(k)).Order(StringComparer.Ordinal).ToArray();
    }

    private void MarkRead(string key)
    {
        lock (_keysRead) _keysRead.Add(key);
    }

    /// <summary>String option or <paramref name="defaultValue"/>.</summary>
    public string? GetString(string key, string? defaultValue = null)
    {
        MarkRead(key);
        return _values.TryGetValue(key, out var v) ? v : defaultValue;
    }

    /// <summary>Integer option in [min, max] or <paramref name="defaultValue"/>.</summary>
    public int GetInt32(string key, int defaultValue, int min = int.MinValue, int max = int.MaxValue)
    {
        MarkRead(key);
        if (!_values.TryGetValue(key, out var v)) return defaultValue;
        if (!int.TryParse(v, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int i))
            throw new PluginOptionException($"{JsonPath}.{key}: expected an integer, got '{v}'");
        if (i < min || i > max) throw new PluginOptionException($"{JsonPath}.{key}: {i} is outside [{min}, {max}]");
        return i;
    }

    /// <summary>64-bit integer option in [min, max] or <paramref name="defaultValue"/> (e.g. a byte count). Since API 1.1.</summary>
    public long GetInt64(string key, long defaultValue, long min = long.MinValue, long max = long.MaxValue)
    {
        if (!_values.TryGetValue(key, out var v)) return defaultValue;
        if (!long.TryParse(v, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out long i))
            throw new PluginOptionException($"{JsonPath}.{key}: expected an integer, got '{v}'");
        if (i < min || i > max) throw new PluginOptionException($"{JsonPath}.{key}: {i} is outside [{min}, {max}]");
        return i;
    }

    /// <summary>Finite number option in [min, max] or <paramref name="defaultValue"/>. Since API 1.1.</summary>
    public double GetDouble(string key, double defaultValue, double min = double.MinValue, double max = double.MaxValue)
    {
        if (!_values.TryGetValue(key, out var v)) return defaultValue;
        if (!double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double d) || !double.IsFinite(d))
            throw new PluginOptionException($"{JsonPath}.{key}: expected a number, got '{v}'");
        if (d < min || d > max) throw new PluginOptionException($"{JsonPath}.{key}: {d.ToString(System.Globalization.CultureInfo.InvariantCulture)} is outside [{min.ToString(System.Globalization.CultureInfo.InvariantCulture)}, {max.ToString(System.Globalization.CultureInfo.InvariantCulture)}]");
        return d;
    }

    /// <summary>Boolean option or <paramref name="defaultValue"/>.</summary>
    public bool GetBoolean(string key, bool defaultValue)
    {
        MarkRead(key);
        if (!_values.TryGetValue(key, out var v)) return defaultValue;
        return v.ToLowerInvariant() switch
        {
            "true" or "1" or "on" or "yes" => true,
            "false" or "0" or "off" or "no" => false,
            _ => throw new PluginOptionException($"{JsonPath}.{key}: expected true/false, got '{v}'"),
        };
    }
}

/// <summary>A plugin option has the wrong type or value; the message names the JSON path.</summary>
public sealed class PluginOptionException(string message) : Exception(message);

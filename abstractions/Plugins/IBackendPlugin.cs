using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace PluginEngine.Abstractions;

/// <summary>The plugin API version this contracts assembly defines.</summary>
public static class PluginApi
{
    /// <summary>
    /// Bumped whenever a change here breaks plugins compiled against an older contracts assembly.
    /// A plugin reports the value it was compiled with (<c>ApiVersion => PluginApi.Version</c>; the
    /// constant is inlined at compile time) and the host rejects any other value with a clear message.
    /// </summary>
    public const int Version = 1;
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

    /// <summary>The <see cref="PluginApi.Version"/> this plugin was compiled against. Implement as <c>=&gt; PluginApi.Version</c>.</summary>
    int ApiVersion { get; }

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
public sealed record PluginContext(string PluginName, string PluginDirectory, PluginOptions Options, ILoggerFactory Loggers);

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

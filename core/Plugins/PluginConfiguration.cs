using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Plugins;

/// <summary>Where a <see cref="PluginConfiguration"/> came from.</summary>
public enum PluginConfigSource
{
    /// <summary>The <c>--plugins FILE</c> option.</summary>
    CommandLine,
    /// <summary>The <c>PLUGINENGINE_PLUGINS</c> environment variable.</summary>
    EnvironmentVariable,
    /// <summary>plugins.json in the current directory.</summary>
    CurrentDirectory,
    /// <summary>plugins.json found walking up from the host executable's folder (the repository root in a checkout).</summary>
    HostDirectory,
    /// <summary>No file was found: the built-in default (the CPU plugin only).</summary>
    BuiltInDefault,
    /// <summary>Parsed from a string or file by the caller directly.</summary>
    Explicit,
}

/// <summary>One entry of <c>plugins[]</c> in plugins.json.</summary>
/// <param name="Name">Unique lowercase id of the entry (e.g. "cpu", "cuda-nvrtc").</param>
/// <param name="Assembly">The assembly path as written in the file.</param>
/// <param name="AssemblyPath">Absolute path: <paramref name="Assembly"/> resolved against the file's folder.</param>
/// <param name="Enabled">False entries are listed as disabled and never loaded.</param>
/// <param name="Options">The entry's options, as scalar strings, tagged with their JSON path.</param>
/// <param name="JsonPath">Where the entry is, e.g. <c>$.plugins[2]</c>.</param>
public sealed record PluginEntry(string Name, string Assembly, string AssemblyPath, bool Enabled, PluginOptions Options, string JsonPath);

/// <summary>
/// The validated contents of plugins.json: which plugin assemblies the host may load, and the backend
/// preference order used when no backend is named. Parsing is strict — unknown properties and duplicate
/// names are errors, so a typo never silently disables a plugin.
/// </summary>
public sealed partial class PluginConfiguration
{
    /// <summary>File name searched for in the current directory and above the host executable.</summary>
    public const string FileName = "plugins.json";

    /// <summary>Environment variable naming a plugins.json file.</summary>
    public const string EnvironmentVariable = "PLUGINENGINE_PLUGINS";

    /// <summary>
    /// Backend name of the CPU plugin: the built-in default backend, the device that runs the layers not offloaded and the
    /// ops another device lacks, and the plugin that <c>-t</c> configures (<see cref="WithCpuThreads"/>). The one place the
    /// host and the bench name a backend.
    /// </summary>
    public const string CpuBackend = "cpu";

    /// <summary>Path of the CPU plugin in the built-in default configuration, relative to its base directory.</summary>
    public const string DefaultCpuAssembly = "plugins/cpu/PluginEngine.Backends.Cpu.dll";

    /// <summary>What <see cref="FilePath"/> says for the built-in default.</summary>
    public const string BuiltInFilePath = "<built-in default>";

    private PluginConfiguration(string filePath, PluginConfigSource source, IReadOnlyList<PluginEntry> plugins, IReadOnlyList<string> preference)
    {
        FilePath = filePath;
        Source = source;
        Plugins = plugins;
        Preference = preference;
    }

    /// <summary>Absolute path of the file, or <see cref="BuiltInFilePath"/>.</summary>
    public string FilePath { get; }

    /// <summary>How the file was found.</summary>
    public PluginConfigSource Source { get; }

    /// <summary>Plugin entries in file order.</summary>
    public IReadOnlyList<PluginEntry> Plugins { get; }

    /// <summary>Backend names in order of preference (may name backends that are not listed or not available).</summary>
    public IReadOnlyList<string> Preference { get; }

    /// <summary>
    /// A copy in which every entry named <paramref name="pluginName"/> has option <paramref name="key"/> set to
    /// <paramref name="value"/>: command-line flags (such as <c>-t</c>) win over plugins.json.
    /// </summary>
    public PluginConfiguration WithOption(string pluginName, string key, string value)
    {
        var plugins = Plugins.Select(p =>
        {
            if (p.Name != pluginName) return p;
            var values = new Dictionary<string, string>(p.Options.Values) { [key] = value };
            return p with { Options = new PluginOptions(values, p.Options.JsonPath) };
        }).ToArray();
        return new PluginConfiguration(FilePath, Source, plugins, Preference);
    }

    /// <summary>This configuration with the CPU plugin's <c>threads</c> option set to <paramref name="threads"/> (the <c>-t</c> switch).</summary>
    public PluginConfiguration WithCpuThreads(int threads)
        => WithOption(CpuBackend, "threads", threads.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>The CPU plugin's configured <c>threads</c> option; 0 when absent or 0 (meaning every core).</summary>
    public int ConfiguredCpuThreads()
        => Plugins.FirstOrDefault(p => p.Name == CpuBackend)?.Options.GetInt32("threads", 0, 0, 4096) ?? 0;

    /// <summary>
    /// The configuration used when no plugins.json exists: the CPU plugin at <see cref="DefaultCpuAssembly"/>
    /// relative to <paramref name="baseDirectory"/>, preference <see cref="CpuBackend"/>.
    /// </summary>
    public static PluginConfiguration CreateDefault(string baseDirectory)
    {
        string full = Path.GetFullPath(Path.Combine(baseDirectory, DefaultCpuAssembly));
        var cpu = new PluginEntry(CpuBackend, DefaultCpuAssembly, full, true, new PluginOptions(null, "$.plugins[0].options"), "$.plugins[0]");
        return new PluginConfiguration(BuiltInFilePath, PluginConfigSource.BuiltInDefault, [cpu], [CpuBackend]);
    }

    /// <summary>Reads and validates <paramref name="filePath"/>.</summary>
    /// <exception cref="PluginConfigException">The file is missing, unreadable, malformed or invalid.</exception>
    public static PluginConfiguration Load(string filePath, PluginConfigSource source = PluginConfigSource.Explicit)
    {
        string full = Path.GetFullPath(filePath);
        if (Directory.Exists(full))
            throw new PluginConfigException(full, "$", $"is a directory, not a file; give the {FileName} inside it");
        string text;
        try
        {
            text = File.ReadAllText(full, Encoding.UTF8);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string what = e is FileNotFoundException or DirectoryNotFoundException ? "file not found" : $"cannot be read ({e.Message})";
            throw new PluginConfigException(full, "$", what, e);
        }
        return Parse(text, full, source);
    }

    /// <summary>
    /// Parses and validates plugins.json text. <paramref name="filePath"/> names the file in errors, and relative
    /// assembly paths are resolved against its folder.
    /// </summary>
    /// <exception cref="PluginConfigException">Malformed JSON (with line and position) or every validation error found.</exception>
    public static PluginConfiguration Parse(string json, string filePath, PluginConfigSource source = PluginConfigSource.Explicit)
    {
        ArgumentNullException.ThrowIfNull(json);
        string fullPath = Path.GetFullPath(filePath);
        string baseDirectory = Path.GetDirectoryName(fullPath) ?? Directory.GetCurrentDirectory();

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            // LineNumber and BytePositionInLine are zero-based; editors count from one.
            string where = e.LineNumber is long line ? $"line {line + 1}, position {(e.BytePositionInLine ?? 0) + 1}" : "unknown position";
            string detail = e.Message;
            // The parser appends its own location, zero-based ("LineNumber: 2 | BytePositionInLine: 2.") and a JSON path: cut both.
            foreach (string tail in (string[])[" LineNumber:", " Path:"])
            {
                int cut = detail.IndexOf(tail, StringComparison.Ordinal);
                if (cut > 0) detail = detail[..cut];
            }
            throw new PluginConfigException(fullPath, e.Path ?? "$", $"malformed JSON at {where}: {detail}", e);
        }

        using (document)
        {
            var reader = new Validator(fullPath, baseDirectory);
            var config = reader.ReadRoot(document.RootElement, source);
            if (reader.Errors.Count > 0) throw new PluginConfigException(reader.Errors);
            return config!;
        }
    }

    /// <summary>Lowercase ids: a letter, then letters, digits, '-', '_' or '.'.</summary>
    [GeneratedRegex("^[a-z][a-z0-9_.-]*$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();

    /// <summary>Walks the document once, collecting every error instead of stopping at the first.</summary>
    private sealed class Validator(string filePath, string baseDirectory)
    {
        public List<PluginConfigError> Errors { get; } = [];

        private void Error(string jsonPath, string message) => Errors.Add(new PluginConfigError(filePath, jsonPath, message));

        public PluginConfiguration? ReadRoot(JsonElement root, PluginConfigSource source)
        {
            if (root.ValueKind != JsonValueKind.Object)
            {
                Error("$", $"expected an object with a 'plugins' array, found {Describe(root)}");
                return null;
            }

            List<PluginEntry> plugins = [];
            List<string> preference = [];
            bool sawPlugins = false;
            foreach (var (name, value) in Properties(root, "$"))
            {
                switch (name)
                {
                    case "plugins":
                        sawPlugins = true;
                        ReadPlugins(value, plugins);
                        break;
                    case "preference":
                        ReadPreference(value, preference);
                        break;
                    default:
                        UnknownProperty("$", name, "'plugins', 'preference'");
                        break;
                }
            }
            if (!sawPlugins) Error("$.plugins", "required property is missing (expected an array of plugin entries)");
            return new PluginConfiguration(filePath, source, plugins, preference);
        }

        private void ReadPlugins(JsonElement value, List<PluginEntry> plugins)
        {
            if (value.ValueKind != JsonValueKind.Array)
            {
                Error("$.plugins", $"expected an array of plugin entries, found {Describe(value)}");
                return;
            }
            var firstIndexByName = new Dictionary<string, int>(StringComparer.Ordinal);
            int index = 0;
            foreach (var element in value.EnumerateArray())
            {
                string path = $"$.plugins[{index}]";
                var entry = ReadEntry(element, path);
                if (entry is not null)
                {
                    if (firstIndexByName.TryGetValue(entry.Name, out int first))
                        Error($"{path}.name", $"duplicate plugin name '{entry.Name}' (already used by $.plugins[{first}]); names must be unique");
                    else
                    {
                        firstIndexByName.Add(entry.Name, index);
                        plugins.Add(entry);
                    }
                }
                index++;
            }
        }

        private PluginEntry? ReadEntry(JsonElement element, string path)
        {
            if (element.ValueKind != JsonValueKind.Object)
            {
                Error(path, $"expected a plugin object {{ \"name\", \"assembly\", ... }}, found {Describe(element)}");
                return null;
            }
            int errorsBefore = Errors.Count;
            string? name = null, assembly = null;
            bool enabled = true;
            Dictionary<string, string> options = new(StringComparer.Ordinal);
            foreach (var (property, value) in Properties(element, path))
            {
                string propertyPath = $"{path}.{property}";
                switch (property)
                {
                    case "name":
                        name = ReadString(value, propertyPath, "a lowercase plugin name");
                        if (name is not null && !NamePattern().IsMatch(name))
                        {
                            Error(propertyPath, $"expected a lowercase id (a-z, then a-z 0-9 . _ -), found \"{name}\"");
                            name = null;
                        }
                        break;
                    case "assembly":
                        assembly = ReadString(value, propertyPath, "an assembly path relative to this file");
                        if (assembly is not null && (assembly.Length == 0 || assembly.IndexOfAny(Path.GetInvalidPathChars()) >= 0))
                        {
                            Error(propertyPath, $"expected an assembly path relative to this file, found \"{assembly}\"");
                            assembly = null;
                        }
                        break;
                    case "enabled":
                        if (value.ValueKind is JsonValueKind.True or JsonValueKind.False) enabled = value.GetBoolean();
                        else Error(propertyPath, $"expected true or false, found {Describe(value)}");
                        break;
                    case "options":
                        ReadOptions(value, propertyPath, options);
                        break;
                    default:
                        UnknownProperty(path, property, "'name', 'assembly', 'enabled', 'options'");
                        break;
                }
            }
            if (!HasProperty(element, "name")) Error($"{path}.name", "required property is missing (expected a lowercase plugin name)");
            if (!HasProperty(element, "assembly")) Error($"{path}.assembly", "required property is missing (expected an assembly path relative to this file)");
            if (Errors.Count > errorsBefore || name is null || assembly is null) return null;

            string full = Path.GetFullPath(Path.Combine(baseDirectory, assembly));
            return new PluginEntry(name, assembly, full, enabled, new PluginOptions(options, $"{path}.options"), path);
        }

        private void ReadOptions(JsonElement value, string path, Dictionary<string, string> options)
        {
            if (value.ValueKind != JsonValueKind.Object)
            {
                Error(path, $"expected an object of scalar options, found {Describe(value)}");
                return;
            }
            foreach (var (key, option) in Properties(value, path))
            {
                string optionPath = $"{path}.{key}";
                switch (option.ValueKind)
                {
                    case JsonValueKind.String:
                        options[key] = option.GetString()!;
                        break;
                    case JsonValueKind.Number:
                        // The literal as written ("0", "1.5", "1e3"): plugins parse it with PluginOptions' typed getters.
                        options[key] = option.GetRawText();
                        break;
                    case JsonValueKind.True:
                    case JsonValueKind.False:
                        options[key] = option.GetBoolean() ? "true" : "false";
                        break;
                    default:
                        Error(optionPath, $"expected a string, number or boolean, found {Describe(option)}");
                        break;
                }
            }
        }

        private void ReadPreference(JsonElement value, List<string> preference)
        {
            if (value.ValueKind != JsonValueKind.Array)
            {
                Error("$.preference", $"expected an array of backend names, found {Describe(value)}");
                return;
            }
            int index = 0;
            foreach (var item in value.EnumerateArray())
            {
                string path = $"$.preference[{index++}]";
                string? backend = ReadString(item, path, "a backend name");
                if (backend is null) continue;
                if (!NamePattern().IsMatch(backend)) Error(path, $"expected a lowercase backend name, found \"{backend}\"");
                else if (preference.Contains(backend)) Error(path, $"backend '{backend}' is listed twice");
                else preference.Add(backend);
            }
        }

        private string? ReadString(JsonElement value, string path, string expected)
        {
            if (value.ValueKind == JsonValueKind.String) return value.GetString();
            Error(path, $"expected {expected} (a string), found {Describe(value)}");
            return null;
        }

        private void UnknownProperty(string objectPath, string property, string allowed)
            => Error($"{objectPath}.{property}", $"unknown property '{property}' (expected one of {allowed}; keys starting with '$' are comments)");

        /// <summary>
        /// Properties of an object, skipping '$'-prefixed documentation keys ("$comment", "$schema") and
        /// reporting duplicate keys, which JsonDocument would otherwise accept silently (last one wins).
        /// </summary>
        private IEnumerable<(string Name, JsonElement Value)> Properties(JsonElement obj, string path)
        {
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in obj.EnumerateObject())
            {
                if (property.Name.StartsWith('$')) continue;
                if (!seen.Add(property.Name))
                {
                    Error($"{path}.{property.Name}", $"property '{property.Name}' appears more than once");
                    continue;
                }
                yield return (property.Name, property.Value);
            }
        }

        private static bool HasProperty(JsonElement obj, string name) => obj.TryGetProperty(name, out _);

        private static string Describe(JsonElement value) => value.ValueKind switch
        {
            JsonValueKind.String => $"string \"{Truncate(value.GetString()!)}\"",
            JsonValueKind.Number => $"number {value.GetRawText()}",
            JsonValueKind.True => "true",
            JsonValueKind.False => "false",
            JsonValueKind.Null => "null",
            JsonValueKind.Array => $"an array of {value.GetArrayLength().ToString(CultureInfo.InvariantCulture)} items",
            JsonValueKind.Object => "an object",
            _ => value.ValueKind.ToString(),
        };

        private static string Truncate(string s) => s.Length <= 60 ? s : s[..57] + "...";
    }
}

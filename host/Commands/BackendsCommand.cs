using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace PluginEngine.Host.Commands;

/// <summary>
/// <c>pluginengine backends [--json]</c>: every plugin candidate (loaded, rejected with its reason, disabled) and
/// the devices of each loaded backend. Exit code 0 even when plugins were rejected: showing them is the point.
/// </summary>
public static class BackendsCommand
{
    /// <summary>Creates the command.</summary>
    public static Command Create(CliContext context)
    {
        var json = new Option<bool>("--json") { Description = "Print the candidates and devices as JSON instead of tables" };
        var command = new Command("backends", "List plugin candidates (loaded or rejected, with reasons) and the devices of each loaded backend");
        command.Options.Add(json);
        command.SetAction(parseResult =>
        {
            var host = context.LoadPlugins();
            var report = BackendsReport.From(host);
            PluginDiagnostics.WarnUnknownOptions(host, context.Error);
            if (parseResult.GetValue(json)) WriteJson(report, context.Output);
            else WriteTables(report, context.CreateConsole());
            return ExitCodes.Success;
        });
        return command;
    }

    private static void WriteTables(BackendsReport report, IAnsiConsole console)
    {
        console.WriteLine($"Plugins from {report.ConfigFile} ({report.ConfigSource})");
        var candidates = new Table().Title("Plugin candidates")
            .AddColumns("Name", "State", "Backend", "Score", "API", "Reason", "Assembly");
        foreach (var c in report.Candidates)
        {
            string state = c.State.ToString().ToLowerInvariant();
            string color = c.State switch { PluginState.Loaded => "green", PluginState.Rejected => "red", _ => "grey" };
            candidates.AddRow(Plain(c.Name), new Markup($"[{color}]{state}[/]"), Plain(c.Backend ?? "-"), Plain(Format(c.Score)),
                              Plain(c.ApiVersionText ?? "-"), Plain(c.Reason), Plain(c.Assembly));
        }
        console.Write(candidates);

        if (report.Devices.Count == 0)
        {
            console.WriteLine("No backend loaded: no devices.");
            return;
        }
        var devices = new Table().Title("Devices")
            .AddColumns("Backend", "Device", "Kind", "Stable id", "Memory free / total", "Capabilities", "Details");
        foreach (var d in report.Devices)
            devices.AddRow(Plain(d.Backend), Plain(d.Name), Plain(d.Kind.ToString()), Plain(d.StableId),
                           Plain($"{FormatBytes(d.FreeMemory)} / {FormatBytes(d.TotalMemory)}"), Plain(d.Capabilities.ToString()), Plain(d.Details));
        console.Write(devices);
        console.WriteLine(report.DefaultBackend is null
            ? "Default backend: none"
            : $"Default backend: {report.DefaultBackend} (preference: {(report.Preference.Count == 0 ? "none" : string.Join(", ", report.Preference))})");
    }

    private static void WriteJson(BackendsReport report, TextWriter output)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("config", report.ConfigFile);
            w.WriteString("configSource", report.ConfigSource.ToString());
            w.WriteStartArray("preference");
            foreach (string p in report.Preference) w.WriteStringValue(p);
            w.WriteEndArray();
            if (report.DefaultBackend is null) w.WriteNull("defaultBackend");
            else w.WriteString("defaultBackend", report.DefaultBackend);
            w.WriteStartArray("candidates");
            foreach (var c in report.Candidates)
            {
                w.WriteStartObject();
                w.WriteString("name", c.Name);
                w.WriteString("state", c.State.ToString().ToLowerInvariant());
                WriteNullable(w, "backend", c.Backend);
                WriteNullable(w, "score", c.Score);
                WriteNullable(w, "apiVersion", c.ApiVersion);
                WriteNullable(w, "apiMinorVersion", c.ApiMinorVersion);
                w.WriteString("reason", c.Reason);
                w.WriteString("assembly", c.AssemblyPath);
                w.WriteStartArray("devices");
                foreach (var d in report.Devices.Where(d => d.CandidateName == c.Name))
                {
                    w.WriteStartObject();
                    w.WriteString("name", d.Name);
                    w.WriteString("kind", d.Kind.ToString());
                    w.WriteString("stableId", d.StableId);
                    w.WriteNumber("freeMemory", d.FreeMemory);
                    w.WriteNumber("totalMemory", d.TotalMemory);
                    w.WriteStartArray("capabilities");
                    foreach (var flag in Enum.GetValues<BackendCapabilities>())
                        if (flag != BackendCapabilities.None && (d.Capabilities & flag) == flag) w.WriteStringValue(flag.ToString());
                    w.WriteEndArray();
                    w.WriteString("details", d.Details);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        output.WriteLine(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
    }

    private static void WriteNullable(Utf8JsonWriter w, string name, string? value)
    {
        if (value is null) w.WriteNull(name); else w.WriteString(name, value);
    }

    private static void WriteNullable(Utf8JsonWriter w, string name, int? value)
    {
        if (value is null) w.WriteNull(name); else w.WriteNumber(name, value.Value);
    }

    /// <summary>Text, never parsed as Spectre markup (reasons can contain '[' from exception messages).</summary>
    private static IRenderable Plain(string text) => new Text(text);

    private static string Format(int? value) => value?.ToString(CultureInfo.InvariantCulture) ?? "-";

    private static string FormatBytes(long bytes)
    {
        if (bytes < 0) return "?";
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double value = bytes;
        int unit = 0;
        while (value >= 1024 && unit < units.Length - 1) { value /= 1024; unit++; }
        return unit == 0 ? $"{bytes} B" : string.Create(CultureInfo.InvariantCulture, $"{value:0.0} {units[unit]}");
    }

    /// <summary>The plugin host's state flattened for display; device memory is queried once, here.</summary>
    private sealed record BackendsReport(string ConfigFile, PluginConfigSource ConfigSource, IReadOnlyList<string> Preference, string? DefaultBackend,
                                         IReadOnlyList<CandidateRow> Candidates, IReadOnlyList<DeviceRow> Devices)
    {
        public static BackendsReport From(PluginHost host)
        {
            var config = host.Configuration;
            string baseDir = config.Source == PluginConfigSource.BuiltInDefault ? Directory.GetCurrentDirectory() : Path.GetDirectoryName(config.FilePath)!;
            var candidates = host.Candidates.Select(c => new CandidateRow(
                c.Name, c.State, c.Backend, c.Score, c.ApiVersion, c.ApiMinorVersion, c.ApiVersionText, c.Reason, c.AssemblyPath, DisplayPath(baseDir, c.AssemblyPath))).ToList();
            var devices = host.Candidates.Where(c => c.State == PluginState.Loaded)
                .SelectMany(c => c.Devices.Select(d => DeviceRow.From(c.Name, d))).ToList();
            string? defaultBackend = host.Backends.Count == 0 ? null : host.SelectDefault().Name;
            return new BackendsReport(config.FilePath, config.Source, config.Preference, defaultBackend, candidates, devices);
        }
    }

    /// <summary>Relative to the plugins.json folder when the assembly is inside it (the usual plugins/&lt;name&gt;/ layout), else absolute.</summary>
    private static string DisplayPath(string baseDirectory, string assemblyPath)
    {
        string relative = Path.GetRelativePath(baseDirectory, assemblyPath);
        return relative.StartsWith("..", StringComparison.Ordinal) || Path.IsPathRooted(relative) ? assemblyPath : relative;
    }

    private sealed record CandidateRow(string Name, PluginState State, string? Backend, int? Score, int? ApiVersion, int? ApiMinorVersion, string? ApiVersionText, string Reason, string AssemblyPath, string Assembly);

    private sealed record DeviceRow(string CandidateName, string Backend, string Name, DeviceKind Kind, string StableId,
                                    long FreeMemory, long TotalMemory, BackendCapabilities Capabilities, string Details)
    {
        public static DeviceRow From(string candidateName, IBackendDevice device)
        {
            var d = device.Description;
            (long free, long total) = (d.FreeMemory, d.TotalMemory);
            string details = d.Details;
            try
            {
                (free, total) = device.Buffers.QueryMemory();
            }
            catch (Exception e)
            {
                // A plugin's failure is shown, never fatal: keep the described values and say why they may be stale.
                details = $"{details} (memory query failed: {e.GetType().Name}: {e.Message})".Trim();
            }
            return new DeviceRow(candidateName, d.Backend, d.Name, d.Kind, d.StableId, free, total, d.Capabilities, details);
        }
    }
}

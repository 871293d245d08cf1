using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using PluginEngine.Core.Plugins;

namespace PluginEngine.Bench;

/// <summary>Output formats of <c>pluginengine bench</c>.</summary>
public enum BenchOutputFormat
{
    /// <summary>Machine header and a markdown table (the default).</summary>
    Markdown,
    /// <summary>A header line and one line per row, every column.</summary>
    Csv,
    /// <summary>A JSON array of rows, every column.</summary>
    Json,
    /// <summary>One JSON object per line, every column.</summary>
    JsonLines,
}

/// <summary>A device of a backend in the run, for the markdown header.</summary>
/// <param name="Backend">Backend name.</param>
/// <param name="Name">Device name.</param>
/// <param name="Details">Device details as reported.</param>
public sealed record BenchDeviceInfo(string Backend, string Name, string Details);

/// <summary>Writes and reads bench rows. Every format has the same columns (<see cref="BenchResult"/>'s properties in snake case).</summary>
public static class BenchOutput
{
    /// <summary>The serializer settings of every JSON row (snake-case names, nulls written so every row has every column).</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private static readonly JsonSerializerOptions IndentedOptions = new(JsonOptions) { WriteIndented = true };

    /// <summary>Parses a format name: md, csv, json or jsonl.</summary>
    /// <exception cref="BenchParameterException">Any other name; the message lists the valid ones.</exception>
    public static BenchOutputFormat ParseFormat(string name) => name.Trim().ToLowerInvariant() switch
    {
        "md" or "markdown" => BenchOutputFormat.Markdown,
        "csv" => BenchOutputFormat.Csv,
        "json" => BenchOutputFormat.Json,
        "jsonl" => BenchOutputFormat.JsonLines,
        _ => throw new BenchParameterException($"-o {name}: expected md, csv, json or jsonl"),
    };

    /// <summary>The column names, in output order.</summary>
    public static IReadOnlyList<string> ColumnNames { get; } =
        JsonSerializer.SerializeToElement(new BenchResult(), JsonOptions).EnumerateObject().Select(p => p.Name).ToArray();

    /// <summary>Writes <paramref name="rows"/> in <paramref name="format"/>.</summary>
    public static void Write(TextWriter output, BenchOutputFormat format, IReadOnlyList<BenchResult> rows, MachineInfo machine, IReadOnlyList<BenchDeviceInfo> devices)
    {
        switch (format)
        {
            case BenchOutputFormat.Markdown: WriteMarkdown(output, rows, machine, devices); break;
            case BenchOutputFormat.Csv: WriteCsv(output, rows); break;
            case BenchOutputFormat.Json: output.WriteLine(JsonSerializer.Serialize(rows, IndentedOptions)); break;
            case BenchOutputFormat.JsonLines: foreach (var row in rows) WriteJsonLine(output, row); break;
            default: throw new ArgumentOutOfRangeException(nameof(format));
        }
    }

    /// <summary>One row as one line of JSON.</summary>
    public static void WriteJsonLine(TextWriter output, BenchResult row) => output.WriteLine(JsonSerializer.Serialize(row, JsonOptions));

    /// <summary>Reads JSONL rows (blank lines skipped).</summary>
    /// <exception cref="FormatException">A line is not a JSON row; the message gives the line number and the parser's reason.</exception>
    public static IReadOnlyList<BenchResult> ReadJsonLines(string text, string source)
    {
        var rows = new List<BenchResult>();
        int lineNumber = 0;
        foreach (string line in text.Split('\n'))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                rows.Add(JsonSerializer.Deserialize<BenchResult>(line, JsonOptions) ?? throw new JsonException("null row"));
            }
            catch (JsonException e)
            {
                throw new FormatException($"{source}: line {lineNumber} is not a bench row: {e.Message}", e);
            }
        }
        return rows;
    }

    /// <summary>CSV with a header; values with commas, quotes or line breaks are quoted; sample arrays are space-separated.</summary>
    public static void WriteCsv(TextWriter output, IReadOnlyList<BenchResult> rows)
    {
        WriteCsvHeader(output);
        foreach (var row in rows) WriteCsvRow(output, row);
    }

    /// <summary>The CSV header line: <see cref="ColumnNames"/>.</summary>
    public static void WriteCsvHeader(TextWriter output) => output.WriteLine(string.Join(',', ColumnNames));

    /// <summary>One row as one CSV record, in <see cref="ColumnNames"/> order.</summary>
    public static void WriteCsvRow(TextWriter output, BenchResult row)
    {
        var line = new StringBuilder();
        bool first = true;
        foreach (var property in JsonSerializer.SerializeToElement(row, JsonOptions).EnumerateObject())
        {
            if (!first) line.Append(',');
            first = false;
            line.Append(CsvField(CsvText(property.Value)));
        }
        output.WriteLine(line.ToString());
    }

    private static string CsvText(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Null => "",
        JsonValueKind.String => value.GetString() ?? "",
        JsonValueKind.Array => string.Join(' ', value.EnumerateArray().Select(CsvText)),
        JsonValueKind.Object => string.Join(';', value.EnumerateObject().Select(p => $"{p.Name}={CsvText(p.Value)}")),
        _ => value.GetRawText(),
    };

    private static string CsvField(string text)
        => text.AsSpan().IndexOfAny(",\"\n\r") < 0 ? text : "\"" + text.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>The machine once, each device once, then one table row per result.</summary>
    public static void WriteMarkdown(TextWriter output, IReadOnlyList<BenchResult> rows, MachineInfo machine, IReadOnlyList<BenchDeviceInfo> devices)
    {
        output.WriteLine($"cpu: {machine.CpuModel} ({machine.Isa}), {machine.LogicalCores} logical cores; os: {machine.OperatingSystem}; runtime: {machine.Runtime}");
        foreach (var d in devices) output.WriteLine($"device {d.Backend}: {d.Name}{(d.Details.Length > 0 ? " — " + d.Details : "")}");
        output.WriteLine();

        // The offload columns (ngl, host import, host registered) matter only when some row ran on another backend than the CPU.
        bool offload = rows.Any(r => r.Backends != PluginConfiguration.CpuBackend && r.Backends != LlamaCppReference.Backend);
        bool batches = rows.Select(r => (r.NBatch, r.NUbatch)).Distinct().Count() > 1;
        bool depth = rows.Any(r => r.NDepth > 0);
        bool ratio = rows.Any(r => r.RatioVsLlamacpp is not null);
        // The split column matters once a row ran over several devices or with split flags (docs/multi-gpu.md).
        bool split = rows.Any(r => r.SplitDevices > 1 || r.SplitMode != "layer" || r.TensorSplit.Length > 0);
        bool parallel = rows.Any(r => r.NSequences > 0);
        // The KV cache type matters once a row ran with another than the default; its context bytes then show what it saved.
        bool kvType = rows.Any(r => r.TypeKv != "f16");

        var columns = new List<(string Header, bool Right, Func<BenchResult, string> Value)>
        {
            ("model", false, r => r.ModelLabel),
            ("size", true, r => FormatBytes(r.ModelSize)),
            ("params", true, r => BenchModelFacts.FormatParameters(r.ModelNParams)),
            ("backend", false, r => r.Backends),
        };
        if (offload) columns.Add(("ngl", true, r => r.NGpuLayers < 0 ? "all" : Invariant(r.NGpuLayers)));
        if (split) columns.Add(("split", false, r => $"{(r.SplitMode == "none" ? "none" : r.TensorSplit.Length > 0 ? $"layer {r.TensorSplit}" : "layer")}, " +
                                                     $"{Invariant(r.SplitDevices)} dev, {Invariant(r.DeviceCopies ?? 0)} copies"));
        columns.Add(("memory", false, r => r.MemoryMode));
        if (offload) columns.Add(("host import", false, r => r.HostImport));
        columns.Add(("threads", true, r => Invariant(r.NThreads)));
        if (batches)
        {
            columns.Add(("n_batch", true, r => Invariant(r.NBatch)));
            columns.Add(("n_ubatch", true, r => Invariant(r.NUbatch)));
        }
        if (kvType) columns.Add(("type_kv", false, r => r.TypeKv));
        columns.Add(("test", false, r => r.Test));
        columns.Add(("t/s", true, r => $"{Invariant(r.AvgTs, "F2")} ± {Invariant(r.StddevTs, "F2")}"));
        if (parallel) columns.Add(("t/s per seq", true, r => Invariant(r.AvgTsPerSequence, "F2")));
        if (ratio) columns.Add(("vs llama.cpp", true, r => r.RatioVsLlamacpp is { } x ? Invariant(x, "F2") + "×" : ""));
        columns.Add(("load ms", true, r => Invariant(r.LoadMs, "F0")));
        columns.Add(("weights owned", true, r => PerDevice(r, d => d.WeightsOwnedBytes, r.WeightsOwnedBytes)));
        columns.Add(("weights imported", true, r => PerDevice(r, d => d.WeightsImportedBytes, r.WeightsImportedBytes)));
        if (offload) columns.Add(("host registered", true, r => Bytes(r.HostRegisteredBytes)));
        if (depth || kvType) columns.Add(("context", true, r => PerDevice(r, d => d.ContextBytes, r.ContextBytes)));
        if (offload) columns.Add(("device used", true, r => PerDevice(r, d => d.DeviceUsedBytes, r.DeviceUsedBytes)));
        columns.Add(("RSS", true, r => FormatBytes(r.ProcessRssBytes)));

        var cells = rows.Select(r => columns.Select(c => c.Value(r)).ToArray()).ToList();
        var widths = columns.Select((c, i) => Math.Max(c.Header.Length, cells.Count == 0 ? 0 : cells.Max(row => row[i].Length))).ToArray();
        var line = new StringBuilder();
        void Emit(IReadOnlyList<string> values)
        {
            line.Clear().Append('|');
            for (int i = 0; i < values.Count; i++)
                line.Append(' ').Append(columns[i].Right ? values[i].PadLeft(widths[i]) : values[i].PadRight(widths[i])).Append(" |");
            output.WriteLine(line.ToString());
        }
        Emit(columns.Select(c => c.Header).ToArray());
        Emit(columns.Select((c, i) => c.Right ? new string('-', widths[i] - 1) + ":" : new string('-', widths[i])).ToArray());
        foreach (var row in cells) Emit(row);
    }

    /// <summary>Bytes as B, KiB, MiB or GiB with two decimals.</summary>
    public static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => Invariant(bytes / (double)(1L << 30), "F2") + " GiB",
        >= 1L << 20 => Invariant(bytes / (double)(1L << 20), "F2") + " MiB",
        >= 1L << 10 => Invariant(bytes / (double)(1L << 10), "F2") + " KiB",
        _ => Invariant(bytes) + " B",
    };

    /// <summary>
    /// A memory cell: the total when one device holds it all, else each device's non-zero share ("cuda 3.50 GiB + cpu 250.00 MiB").
    /// </summary>
    private static string PerDevice(BenchResult row, Func<BenchDeviceMemory, long> bytes, long? total)
    {
        var shares = row.DeviceMemory?.Where(d => bytes(d) != 0).ToArray();
        return shares is { Length: > 1 } ? string.Join(" + ", shares.Select(d => $"{d.Device} {FormatBytes(bytes(d))}")) : Bytes(total);
    }

    /// <summary>A byte count, or empty when it was not measured.</summary>
    private static string Bytes(long? bytes) => bytes is { } b ? FormatBytes(b) : "";

    private static string Invariant(long value) => value.ToString(CultureInfo.InvariantCulture);

    private static string Invariant(double value, string format) => value.ToString(format, CultureInfo.InvariantCulture);
}

using System.Text.Json;
using PluginEngine.Bench;
using PluginEngine.Core.Models;
using PluginEngine.Host;
using PluginEngine.Tests.Plugins;
using Xunit;

namespace PluginEngine.Tests.Bench;

/// <summary>A tiny generated model and a plugins.json with the CPU plugin, shared by the bench command tests.</summary>
public sealed class BenchModelFixture : IDisposable
{
    private readonly TempDirectory _dir = new();

    public BenchModelFixture()
    {
        ModelPath = System.IO.Path.Combine(_dir.Path, "tiny.gguf");
        SyntheticModel.Write(new SyntheticModelSpec { Name = "bench-tiny", VocabularySize = 512, EmbeddingLength = 64, BlockCount = 2, HeadCount = 4, KvHeadCount = 2, FeedForwardLength = 128, ContextLength = 256 }, ModelPath);
        PluginsPath = _dir.WritePlugins(("cpu", PluginTestFiles.CpuPlugin, null, true));
        Heads32Path = System.IO.Path.Combine(_dir.Path, "heads32.gguf");
        SyntheticModel.Write(new SyntheticModelSpec { Name = "bench-heads32", VocabularySize = 512, EmbeddingLength = 128, BlockCount = 2, HeadCount = 4, KvHeadCount = 2, FeedForwardLength = 256, ContextLength = 256 }, Heads32Path);
    }

    public string ModelPath { get; }

    /// <summary>Heads of 32 elements (tiny.gguf's are 16): a model a quantized KV cache can hold.</summary>
    public string Heads32Path { get; }
    public string PluginsPath { get; }

    public void Dispose() => _dir.Dispose();
}

/// <summary><c>pluginengine bench</c> run in-process on a tiny generated model (-p 8 -n 4 -r 2, one thread).</summary>
public sealed class BenchCommandTests(BenchModelFixture model) : IClassFixture<BenchModelFixture>
{
    /// <summary>The columns docs/benchmarks.md documents, in output order.</summary>
    private static readonly string[] DocumentedColumns =
    [
        "cpu_info", "cpu_isa", "n_cores", "os", "runtime",
        "model_filename", "model_label", "model_type", "model_size", "model_n_params",
        "backends", "device", "device_details", "n_threads", "n_batch", "n_ubatch", "n_gpu_layers", "use_mmap", "memory_mode", "host_import", "type_kv",
        "test", "n_prompt", "n_gen", "n_depth", "test_time", "repetitions",
        "avg_ns", "stddev_ns", "avg_ts", "stddev_ts", "samples_ns", "samples_ts",
        "load_ms", "weights_owned_bytes", "weights_imported_bytes", "host_mapped_bytes", "host_registered_bytes",
        "hugepages_before", "hugepages_after", "context_bytes", "device_used_bytes", "device_memory", "process_rss_bytes", "device_copies",
        "split_mode", "tensor_split", "split_devices", "device_transfers", "ratio_vs_llamacpp", "n_sequences", "avg_ts_per_sequence",
    ];

    private (int ExitCode, string Out, string Err) Bench(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = Cli.Run(["bench", "--plugins", model.PluginsPath, .. args], output, error);
        return (code, output.ToString(), error.ToString());
    }

    private string[] Tiny(params string[] more) => ["-m", model.ModelPath, "-t", "1", "-r", "2", .. more];

    [Fact]
    public void Json_rows_carry_every_documented_column_with_sane_values()
    {
        var (code, output, error) = Bench(Tiny("-p", "8", "-n", "4", "-o", "json"));

        Assert.True(code == ExitCodes.Success, error);
        using var json = JsonDocument.Parse(output); // stdout holds the results and nothing else
        var rows = json.RootElement.EnumerateArray().ToArray();
        Assert.Equal(2, rows.Length);
        foreach (var row in rows)
        {
            Assert.Equal(DocumentedColumns, row.EnumerateObject().Select(p => p.Name).ToArray());
            Assert.True(row.GetProperty("avg_ts").GetDouble() > 0);
            Assert.True(row.GetProperty("avg_ns").GetInt64() > 0);
            Assert.True(row.GetProperty("stddev_ts").GetDouble() >= 0);
            Assert.Equal(2, row.GetProperty("repetitions").GetInt32());
            Assert.Equal(2, row.GetProperty("samples_ns").GetArrayLength());
            Assert.Equal(2, row.GetProperty("samples_ts").GetArrayLength());
            Assert.Equal(model.ModelPath, row.GetProperty("model_filename").GetString());
            Assert.Equal("tiny.gguf", row.GetProperty("model_label").GetString());
            Assert.StartsWith("llama ", row.GetProperty("model_type").GetString());
            Assert.True(row.GetProperty("model_n_params").GetInt64() > 0);
            Assert.True(row.GetProperty("model_size").GetInt64() > 0);
            Assert.Equal("cpu", row.GetProperty("backends").GetString());
            Assert.Equal(1, row.GetProperty("n_threads").GetInt32());
            Assert.Equal("file", row.GetProperty("memory_mode").GetString());
            Assert.True(row.GetProperty("use_mmap").GetBoolean());
            // Every tensor is somewhere: read in place from the mapping (imported) or copied (owned; the planner copies
            // tensors whose file offsets miss the device's alignment). Only a device that does not read host memory in place registers it.
            long owned = row.GetProperty("weights_owned_bytes").GetInt64(), imported = row.GetProperty("weights_imported_bytes").GetInt64();
            Assert.True(owned + imported >= row.GetProperty("model_size").GetInt64());
            Assert.Equal(0, row.GetProperty("host_registered_bytes").GetInt64());
            if (imported > 0) Assert.True(row.GetProperty("host_mapped_bytes").GetInt64() >= imported); // an import keeps the mapping
            Assert.True(row.GetProperty("context_bytes").GetInt64() > 0);
            // Memory per device: one device here (the CPU), holding all of it.
            var perDevice = Assert.Single(row.GetProperty("device_memory").EnumerateArray());
            Assert.Equal("cpu", perDevice.GetProperty("device").GetString());
            Assert.Equal(owned, perDevice.GetProperty("weights_owned_bytes").GetInt64());
            Assert.Equal(imported, perDevice.GetProperty("weights_imported_bytes").GetInt64());
            Assert.Equal(row.GetProperty("context_bytes").GetInt64(), perDevice.GetProperty("context_bytes").GetInt64());
            Assert.True(row.GetProperty("process_rss_bytes").GetInt64() > 0);
            Assert.True(row.GetProperty("load_ms").GetDouble() > 0);
            Assert.Equal(JsonValueKind.Null, row.GetProperty("ratio_vs_llamacpp").ValueKind);
            Assert.Equal("f16", row.GetProperty("type_kv").GetString()); // the default KV cache
        }
        Assert.Equal(("pp8", 8, 0), (rows[0].GetProperty("test").GetString(), rows[0].GetProperty("n_prompt").GetInt32(), rows[0].GetProperty("n_gen").GetInt32()));
        Assert.Equal(("tg4", 0, 4), (rows[1].GetProperty("test").GetString(), rows[1].GetProperty("n_prompt").GetInt32(), rows[1].GetProperty("n_gen").GetInt32()));
        // Progress goes to stderr as plain lines when the output is a machine format.
        Assert.Contains("[1/2]", error);
        Assert.Contains("[2/2]", error);
    }

    [Fact]
    public void Jsonl_has_one_row_per_line_including_pg_and_depth_tests()
    {
        var (code, output, error) = Bench(Tiny("-p", "8", "-n", "4", "-pg", "4,2", "-d", "0,4", "-o", "jsonl"));

        Assert.True(code == ExitCodes.Success, error);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(6, lines.Length); // (pp8, tg4, pp4+tg2) × depths 0 and 4
        var rows = lines.Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(["pp8", "tg4", "pp4+tg2", "pp8 @ d4", "tg4 @ d4", "pp4+tg2 @ d4"], rows.Select(r => r.GetProperty("test").GetString()!).ToArray());
        var pg = rows[2];
        Assert.Equal((4, 2, 0), (pg.GetProperty("n_prompt").GetInt32(), pg.GetProperty("n_gen").GetInt32(), pg.GetProperty("n_depth").GetInt32()));
        Assert.Equal(4, rows[5].GetProperty("n_depth").GetInt32());
        // tokens/s counts the timed tokens only (depth excluded): mean of 6 tokens / each sample's seconds.
        var samplesNs = pg.GetProperty("samples_ns").EnumerateArray().Select(s => s.GetInt64()).ToArray();
        double expected = samplesNs.Select(ns => 6 * 1e9 / ns).Average();
        Assert.Equal(expected, pg.GetProperty("avg_ts").GetDouble(), 6);
        Assert.All(rows, r => Assert.DoesNotContain(r.EnumerateObject(), p => p.Value.ValueKind == JsonValueKind.Undefined));
    }

    [Theory]
    [InlineData("0", "4", "tg4")]  // as llama-bench: -p 0 runs no prompt test
    [InlineData("8", "0", "pp8")]
    public void A_zero_count_runs_no_test_of_that_kind(string prompt, string gen, string only)
    {
        var (code, output, error) = Bench(Tiny("-p", prompt, "-n", gen, "-o", "jsonl"));

        Assert.True(code == ExitCodes.Success, error);
        var row = JsonDocument.Parse(Assert.Single(output.Split('\n', StringSplitOptions.RemoveEmptyEntries))).RootElement;
        Assert.Equal(only, row.GetProperty("test").GetString());
    }

    [Fact]
    public void Markdown_has_one_row_per_configuration_of_the_cartesian_product()
    {
        var (code, output, error) = Bench("-m", model.ModelPath, "-r", "1", "-t", "1,2", "--memory", "file,heap", "-p", "4,8", "-n", "2");

        Assert.True(code == ExitCodes.Success, error);
        var tableRows = output.Split('\n').Where(l => l.StartsWith('|')).Skip(2).ToArray(); // header and separator
        Assert.Equal(2 * 2 * 3, tableRows.Length); // threads × memory modes × tests (pp4, pp8, tg2)
        Assert.Equal(6, tableRows.Count(r => r.Contains("| heap ")));
        Assert.Equal(6, tableRows.Count(r => r.Contains("| file ")));
        Assert.Equal(4, tableRows.Count(r => r.Contains("| pp8 ")));
        Assert.All(tableRows, r => Assert.Matches(@"\d+\.\d\d ± \d+\.\d\d", r));
        Assert.StartsWith("cpu: ", output); // the machine, once, above the table
        Assert.Single(output.Split('\n'), l => l.StartsWith("cpu: "));
        Assert.Contains("device cpu: ", output);
        var header = output.Split('\n').First(l => l.StartsWith('|')).Split('|').Select(c => c.Trim()).ToArray();
        int threadsColumn = Array.IndexOf(header, "threads");
        Assert.Equal(6, tableRows.Count(r => r.Split('|')[threadsColumn].Trim() == "1"));
        Assert.Equal(6, tableRows.Count(r => r.Split('|')[threadsColumn].Trim() == "2"));
    }

    [Fact]
    public void Parallel_rows_are_concurrent_decode_tests_with_aggregate_and_per_sequence_rates()
    {
        var (code, output, error) = Bench(Tiny("--parallel", "1,3", "-n", "2", "--parallel-prompt", "4", "-o", "json"));

        Assert.True(code == ExitCodes.Success, error);
        var rows = JsonDocument.Parse(output).RootElement.EnumerateArray().ToArray();
        Assert.Equal(["tg2 x1 @ d4", "tg2 x3 @ d4"], rows.Select(r => r.GetProperty("test").GetString()));
        Assert.Equal([1, 3], rows.Select(r => r.GetProperty("n_sequences").GetInt32()));
        foreach (var row in rows)
        {
            double aggregate = row.GetProperty("avg_ts").GetDouble();
            Assert.True(aggregate > 0);
            Assert.Equal(aggregate / row.GetProperty("n_sequences").GetInt32(), row.GetProperty("avg_ts_per_sequence").GetDouble(), 9);
        }
        var (badCode, _, badError) = Bench(Tiny("--parallel", "2", "-p", "8"));
        Assert.Equal(ExitCodes.UserError, badCode);
        Assert.Contains("--parallel runs concurrent-decode tests only", badError);
    }

    [Fact]
    public void Kv_cache_types_are_a_dimension_of_the_product_with_a_type_kv_column()
    {
        var (code, output, error) = Bench("-m", model.Heads32Path, "-t", "1", "-r", "1", "-p", "8", "-n", "2", "-d", "64", "-ctk", "f16,q8_0", "--cache-type", "q4_0", "-o", "json");

        Assert.True(code == ExitCodes.Success, error);
        var rows = JsonDocument.Parse(output).RootElement.EnumerateArray().ToArray();
        Assert.Equal(["f16", "f16", "q8_0", "q8_0", "q4_0", "q4_0"], rows.Select(r => r.GetProperty("type_kv").GetString()!).ToArray());
        Assert.All(rows, r => Assert.True(r.GetProperty("avg_ts").GetDouble() > 0));
        // The same test, three caches: each smaller than the one before (the activations are the same).
        long[] context = [.. rows.Where(r => r.GetProperty("test").GetString() == "tg2 @ d64").Select(r => r.GetProperty("context_bytes").GetInt64())];
        Assert.True(context[0] > context[1] && context[1] > context[2], string.Join(", ", context));
        Assert.Contains("kv q8_0", error); // the progress lines name the type

        var (mdCode, markdown, mdError) = Bench("-m", model.Heads32Path, "-t", "1", "-r", "1", "-p", "0", "-n", "2", "-ctk", "q8_0");
        Assert.True(mdCode == ExitCodes.Success, mdError);
        var header = markdown.Split('\n').First(l => l.StartsWith('|')).Split('|').Select(c => c.Trim()).ToArray();
        Assert.Contains("type_kv", header);
        Assert.Contains("context", header);
        Assert.Contains("| q8_0 ", markdown);
    }

    [Fact]
    public void Csv_has_the_column_header_and_one_record_per_row()
    {
        var (code, output, error) = Bench(Tiny("-p", "8", "-n", "4", "-o", "csv"));

        Assert.True(code == ExitCodes.Success, error);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToArray();
        Assert.Equal(string.Join(',', DocumentedColumns), lines[0]);
        Assert.Equal(3, lines.Length);
        foreach (string line in lines.Skip(1))
        {
            var fields = CsvFields(line);
            Assert.Equal(DocumentedColumns.Length, fields.Count);
            Assert.Equal("cpu", fields[Array.IndexOf(DocumentedColumns, "backends")]);
            Assert.True(double.Parse(fields[Array.IndexOf(DocumentedColumns, "avg_ts")], System.Globalization.CultureInfo.InvariantCulture) > 0);
            Assert.Equal(2, fields[Array.IndexOf(DocumentedColumns, "samples_ns")].Split(' ').Length);
        }
    }

    [Fact]
    public void Unknown_backend_exits_2_and_lists_the_available_ones()
    {
        var (code, output, error) = Bench(Tiny("-p", "8", "-n", "4", "--backend", "cpu,nosuch"));

        Assert.Equal(ExitCodes.UserError, code);
        Assert.Equal("", output);
        Assert.Contains("backend 'nosuch' is not available", error);
        Assert.Contains("available backends: cpu", error);
        Assert.DoesNotContain("[1/", error); // validated before anything ran
    }

    [Fact]
    public void Hugepages_without_mmap_exits_2_with_the_reason()
    {
        var (code, output, error) = Bench(Tiny("--hugepages", "1", "--mmap", "0"));

        Assert.Equal(ExitCodes.UserError, code);
        Assert.Equal("", output);
        Assert.Contains("--hugepages 1 with --mmap 0", error);
        Assert.Contains("huge pages are an anonymous mmap", error);
    }

    [Fact]
    public void Impossible_pair_in_a_product_is_skipped_with_a_note()
    {
        var (code, output, error) = Bench(Tiny("--hugepages", "0,1", "--mmap", "0", "-p", "4", "-n", "2", "-o", "jsonl"));

        Assert.True(code == ExitCodes.Success, error);
        Assert.Contains("note: skipping --hugepages 1 with --mmap 0", error);
        var rows = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(2, rows.Length);
        Assert.All(rows, r => Assert.Equal("heap", r.GetProperty("memory_mode").GetString()));
        Assert.All(rows, r => Assert.False(r.GetProperty("use_mmap").GetBoolean()));
        // The loader lays a heap copy out for the device, so the CPU uses all of it in place.
        Assert.All(rows, r => Assert.True(r.GetProperty("weights_imported_bytes").GetInt64() >= r.GetProperty("model_size").GetInt64()));
        Assert.All(rows, r => Assert.Equal(0, r.GetProperty("weights_owned_bytes").GetInt64()));
    }

    [Fact]
    public void Split_configurations_are_rows_with_a_split_column_and_one_too_many_for_the_devices_is_reported()
    {
        var (code, output, error) = Bench(Tiny("-sm", "none,layer", "-ts", "1,1/1", "-p", "4", "-n", "2"));

        Assert.Equal(ExitCodes.UserError, code); // -ts 1/1 needs two devices; the cpu backend has one
        Assert.Contains("error: tiny.gguf on cpu (file, 1 threads): --tensor-split 1,1: 2 proportions for 1 device(s)", error);
        var header = output.Split('\n').First(l => l.StartsWith('|')).Split('|').Select(c => c.Trim()).ToArray();
        int column = Array.IndexOf(header, "split");
        Assert.True(column > 0, output);
        var rows = output.Split('\n').Where(l => l.StartsWith('|')).Skip(2).Select(r => r.Split('|')[column].Trim()).ToArray();
        Assert.Equal(["none, 1 dev, 0 copies", "none, 1 dev, 0 copies", "layer 1, 1 dev, 0 copies", "layer 1, 1 dev, 0 copies"], rows);
    }

    [Fact]
    public void A_configuration_this_machine_cannot_load_is_reported_while_the_others_run()
    {
        var pool = PluginEngine.Core.Memory.HugePagePool.Query();
        if (pool.IsAvailable && pool.FreePages > 0) Assert.Skip($"this machine has a huge page pool ({pool}); the hugepages load would succeed");

        var (code, output, error) = Bench(Tiny("--memory", "file,hugepages", "-p", "4", "-n", "2", "-o", "jsonl"));

        Assert.Equal(ExitCodes.UserError, code);
        var rows = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        Assert.Equal(2, rows.Length); // the file-mapped configuration's pp4 and tg2
        Assert.All(rows, r => Assert.Equal("file", r.GetProperty("memory_mode").GetString()));
        Assert.Contains("error: tiny.gguf on cpu (hugepages, 1 threads): ", error);
        Assert.Contains("huge pages", error);
    }

    [Theory]
    [InlineData(new[] { "-p", "0", "-n", "0" }, "-p 0 and -n 0 without -pg: no test to run")]
    [InlineData(new[] { "-n", "-3" }, "-n -3: must be at least 0")]
    [InlineData(new[] { "-r", "0" }, "-r 0: must be positive")]
    [InlineData(new[] { "-t", "1,,2" }, "-t 1,,2: empty item")]
    [InlineData(new[] { "-p", "8,abc" }, "-p: 'abc' is not an integer")]
    [InlineData(new[] { "-pg", "512" }, "-pg 512: expected P,N")]
    [InlineData(new[] { "--mmap", "2" }, "--mmap: '2' is not 0 or 1")]
    [InlineData(new[] { "--gpu-host-import", "sometimes" }, "--host-import: unknown value 'sometimes'")]
    [InlineData(new[] { "--memory", "file,swap" }, "--memory: unknown mode 'swap'")]
    [InlineData(new[] { "-o", "xml" }, "-o xml: expected md, csv, json or jsonl")]
    [InlineData(new[] { "--synthetic", "tinyllama:Q9_9" }, "unknown weight type 'Q9_9'")]
    [InlineData(new[] { "--synthetic", "demo:Q8_0:lots" }, "context 'lots' must be an integer from 16 to 1048576")]
    [InlineData(new[] { "--synthetic", "demo:Q8_0:64:1" }, "expected SHAPE:TYPE or SHAPE:TYPE:CONTEXT")]
    [InlineData(new[] { "-p", "300" }, "pp300 needs 300 context positions")]
    [InlineData(new[] { "-sm", "row" }, "-sm row: expected none or layer")]
    [InlineData(new[] { "-ts", "1/x" }, "-ts 1/x: 'x' is not a number (write proportions separated by /, e.g. 3/1)")]
    [InlineData(new[] { "-ts", "1/-1" }, "-ts 1/-1: proportion 2 (-1) must be a finite number ≥ 0")]
    [InlineData(new[] { "-ctk", "f16,q5_0" }, "-ctk q5_0: expected f16, f32, q8_0 or q4_0")]
    [InlineData(new[] { "-ctk", "q8_0" }, "-ctk q8_0 on tiny.gguf: KV cache type q8_0 needs a head size that is a multiple of 32")] // heads of 16
    public void Bad_parameters_exit_2_naming_the_problem(string[] args, string expected)
    {
        var (code, output, error) = Bench(["-m", model.ModelPath, .. args]);

        Assert.Equal(ExitCodes.UserError, code);
        Assert.Equal("", output);
        Assert.Contains(expected, error);
    }

    [Fact]
    public void A_synthetic_models_context_can_be_set_and_is_what_the_tests_are_checked_against()
    {
        var (code, _, error) = Bench("--synthetic", "demo:Q8_0:64", "-p", "100", "-n", "1");

        Assert.Equal(ExitCodes.UserError, code);
        Assert.Contains("pp100 needs 100 context positions", error);
        Assert.Contains("synthetic:demo:Q8_0:64 has a context length of 64", error);
    }

    [Fact]
    public void Missing_model_file_exits_2_naming_it()
    {
        var (code, _, error) = Bench("-m", model.ModelPath + ".missing");

        Assert.Equal(ExitCodes.UserError, code);
        Assert.Contains(model.ModelPath + ".missing", error);
        Assert.Contains("not found", error);
    }

    [Fact]
    public void Reference_that_cannot_run_is_reported_and_the_bench_continues()
    {
        string missing = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "no-such-dir-" + Guid.NewGuid().ToString("N"), "LlamaCppReference.dll");
        var (code, output, error) = Bench(Tiny("-p", "4", "-n", "2", "-o", "jsonl", "--reference", "llamacpp", "--reference-tool", missing));

        Assert.True(code == ExitCodes.Success, error);
        Assert.Contains("reference: llama.cpp rows skipped", error);
        Assert.Contains("file not found", error);
        var rows = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, rows.Length);
        Assert.All(rows, r => Assert.Contains("\"backends\":\"cpu\"", r));
    }

    [Fact]
    public void Unknown_reference_exits_2()
    {
        var (code, _, error) = Bench(Tiny("--reference", "onnx"));

        Assert.Equal(ExitCodes.UserError, code);
        Assert.Contains("--reference onnx: the only reference is llamacpp", error);
    }

    /// <summary>Splits one CSV record (RFC 4180 quoting).</summary>
    private static List<string> CsvFields(string line)
    {
        var fields = new List<string>();
        var field = new System.Text.StringBuilder();
        bool quoted = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (quoted)
            {
                if (c == '"' && i + 1 < line.Length && line[i + 1] == '"') { field.Append('"'); i++; }
                else if (c == '"') quoted = false;
                else field.Append(c);
            }
            else if (c == '"') quoted = true;
            else if (c == ',') { fields.Add(field.ToString()); field.Clear(); }
            else field.Append(c);
        }
        fields.Add(field.ToString());
        return fields;
    }
}

/// <summary>
/// The llama.cpp reference rows, end to end, when tools/LlamaCppReference has been built
/// (<c>dotnet build tools/LlamaCppReference -c Release</c>); skipped otherwise, since the test project must not build it.
/// </summary>
public sealed class BenchReferenceTests(BenchModelFixture model) : IClassFixture<BenchModelFixture>
{
    /// <summary>The built reference tool; skips the test when there is none.</summary>
    private static string ReferenceTool()
    {
        string? tool = new[] { "Release", "Debug" }
            .Select(c => System.IO.Path.Combine(PluginTestFiles.RepoRoot, "tools", "LlamaCppReference", "bin", c, "net10.0", LlamaCppReference.AssemblyName))
            .FirstOrDefault(File.Exists);
        if (tool is null) Assert.Skip("tools/LlamaCppReference is not built (dotnet build tools/LlamaCppReference -c Release)");
        return tool;
    }

    [Fact]
    public void Reference_rows_merge_with_a_ratio_for_matching_rows()
    {
        string tool = ReferenceTool();

        var output = new StringWriter();
        var error = new StringWriter();
        int code = Cli.Run(["bench", "--plugins", model.PluginsPath, "-m", model.ModelPath, "-t", "1", "-r", "2", "-p", "8", "-n", "4",
            "-o", "json", "--reference", "llamacpp", "--reference-tool", tool], output, error);

        Assert.True(code == ExitCodes.Success, error.ToString());
        using var json = JsonDocument.Parse(output.ToString());
        var rows = json.RootElement.EnumerateArray().ToArray();
        Assert.Equal(4, rows.Length);
        var ours = rows.Where(r => r.GetProperty("backends").GetString() == "cpu").ToArray();
        var reference = rows.Where(r => r.GetProperty("backends").GetString() == "llama.cpp").ToArray();
        Assert.Equal(2, ours.Length);
        Assert.Equal(["pp8", "tg4"], reference.Select(r => r.GetProperty("test").GetString()!).ToArray());
        foreach (var row in reference)
        {
            Assert.Equal(model.ModelPath, row.GetProperty("model_filename").GetString());
            Assert.Equal(1, row.GetProperty("n_threads").GetInt32());
            Assert.Equal(2, row.GetProperty("samples_ns").GetArrayLength());
            Assert.True(row.GetProperty("avg_ts").GetDouble() > 0);
        }
        foreach (var row in ours)
        {
            var match = reference.Single(r => r.GetProperty("test").GetString() == row.GetProperty("test").GetString());
            double expected = row.GetProperty("avg_ts").GetDouble() / match.GetProperty("avg_ts").GetDouble();
            Assert.Equal(expected, row.GetProperty("ratio_vs_llamacpp").GetDouble(), 9);
        }
    }

    [Fact]
    public void Reference_rows_are_measured_for_each_kv_cache_type()
    {
        string tool = ReferenceTool();

        var output = new StringWriter();
        var error = new StringWriter();
        int code = Cli.Run(["bench", "--plugins", model.PluginsPath, "-m", model.Heads32Path, "-t", "1", "-r", "1", "-p", "0", "-n", "4",
            "-ctk", "f16,q8_0", "-o", "json", "--reference", "llamacpp", "--reference-tool", tool], output, error);

        Assert.True(code == ExitCodes.Success, error.ToString());
        var rows = JsonDocument.Parse(output.ToString()).RootElement.EnumerateArray().ToArray();
        var reference = rows.Where(r => r.GetProperty("backends").GetString() == "llama.cpp").ToArray();
        if (reference.Length == 0) Assert.Skip($"the reference program did not run here: {error}");
        Assert.Equal(["f16", "q8_0"], reference.Select(r => r.GetProperty("type_kv").GetString()!).ToArray());
        foreach (var row in rows.Where(r => r.GetProperty("backends").GetString() == "cpu"))
        {
            var match = reference.Single(r => r.GetProperty("type_kv").GetString() == row.GetProperty("type_kv").GetString());
            Assert.Equal(row.GetProperty("avg_ts").GetDouble() / match.GetProperty("avg_ts").GetDouble(), row.GetProperty("ratio_vs_llamacpp").GetDouble(), 9);
        }
    }
}

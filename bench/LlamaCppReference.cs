using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace PluginEngine.Bench;

/// <summary>What the reference program measures: one model at one thread count and batch setting, several tests.</summary>
/// <param name="ModelPath">The GGUF file.</param>
/// <param name="ModelLabel">The label our rows use for it (copied into the reference rows so they line up).</param>
/// <param name="Threads">CPU threads.</param>
/// <param name="Batch">n_batch.</param>
/// <param name="MicroBatch">n_ubatch.</param>
/// <param name="Repetitions">Timed repetitions per test (after one warm-up).</param>
/// <param name="Tests">Tests to run.</param>
/// <param name="TypeKv">KV cache type for K and V (f16, f32, q8_0, q4_0: the <c>type_kv</c> column).</param>
public sealed record LlamaCppReferenceRequest(string ModelPath, string ModelLabel, int Threads, int Batch, int MicroBatch, int Repetitions, IReadOnlyList<BenchTest> Tests,
                                              string TypeKv = "f16")
{
    /// <summary>The reference program's arguments for this request (its command line is documented in tools/LlamaCppReference).</summary>
    public IReadOnlyList<string> ToArguments()
    {
        var args = new List<string>
        {
            "--model", ModelPath, "--label", ModelLabel,
            "--threads", Invariant(Threads), "--batch", Invariant(Batch), "--ubatch", Invariant(MicroBatch), "--repetitions", Invariant(Repetitions),
        };
        foreach (var t in Tests) args.AddRange(["--test", $"{Invariant(t.PromptTokens)},{Invariant(t.GeneratedTokens)},{Invariant(t.Depth)}"]);
        if (TypeKv != "f16") args.AddRange(["--type-kv", TypeKv]); // older builds of the program know only the default
        return args;
    }

    private static string Invariant(int value) => value.ToString(CultureInfo.InvariantCulture);
}

/// <summary>The reference program could not produce rows; the message says why (missing build, exit code and its stderr, bad output).</summary>
public sealed class LlamaCppReferenceException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// The llama.cpp reference: tools/LlamaCppReference, a separate program (it alone references LLamaSharp), run as a
/// subprocess that prints bench rows as JSONL with <c>backends = "llama.cpp"</c>. Found, in order: the path given with
/// <c>--reference-tool</c>; <c>LlamaCppReference.dll</c> next to the host; in the repository above the host, its
/// Release then Debug build output; else <c>dotnet run --project tools/LlamaCppReference -c Release --</c> (builds on first use).
/// </summary>
public sealed class LlamaCppReference
{
    /// <summary>The <c>backends</c> column of the reference rows.</summary>
    public const string Backend = "llama.cpp";

    /// <summary>The program's project, relative to the repository root.</summary>
    public const string ProjectPath = "tools/LlamaCppReference/LlamaCppReference.csproj";

    /// <summary>Its assembly's file name.</summary>
    public const string AssemblyName = "LlamaCppReference.dll";

    private readonly string _fileName;
    private readonly IReadOnlyList<string> _prefixArguments;

    private LlamaCppReference(string fileName, IReadOnlyList<string> prefixArguments)
    {
        _fileName = fileName;
        _prefixArguments = prefixArguments;
    }

    /// <summary>Finds the program (see the class comment); null with <paramref name="whyNot"/> when it cannot be found.</summary>
    /// <param name="explicitPath">The <c>--reference-tool</c> value, or null.</param>
    /// <param name="hostDirectory">The host's folder (<see cref="AppContext.BaseDirectory"/>).</param>
    /// <param name="whyNot">Why nothing was found.</param>
    public static LlamaCppReference? Locate(string? explicitPath, string hostDirectory, out string? whyNot)
    {
        whyNot = null;
        string dotnet = DotnetHost();
        if (!string.IsNullOrWhiteSpace(explicitPath))
        {
            string full = Path.GetFullPath(explicitPath);
            if (!File.Exists(full))
            {
                whyNot = $"--reference-tool {explicitPath}: file not found";
                return null;
            }
            return full.EndsWith(".dll", StringComparison.OrdinalIgnoreCase) ? new(dotnet, [full]) : new(full, []);
        }

        string beside = Path.Combine(hostDirectory, AssemblyName);
        if (File.Exists(beside)) return new(dotnet, [beside]);

        for (var dir = new DirectoryInfo(Path.GetFullPath(hostDirectory)); dir is not null; dir = dir.Parent)
        {
            string project = Path.Combine(dir.FullName, ProjectPath);
            if (!File.Exists(project)) continue;
            string projectDir = Path.GetDirectoryName(project)!;
            foreach (string configuration in new[] { "Release", "Debug" })
            {
                string built = Path.Combine(projectDir, "bin", configuration, "net10.0", AssemblyName);
                if (File.Exists(built)) return new(dotnet, [built]);
            }
            return new(dotnet, ["run", "--project", project, "-c", "Release", "--"]);
        }
        whyNot = $"{AssemblyName} is not next to the host and no {ProjectPath} was found above {hostDirectory}; build it or pass --reference-tool";
        return null;
    }

    /// <summary>The command line it runs, for the log.</summary>
    public string Describe() => string.Join(' ', new[] { _fileName }.Concat(_prefixArguments));

    /// <summary>Runs <paramref name="request"/> and returns the program's rows.</summary>
    /// <exception cref="LlamaCppReferenceException">The program could not start, failed, or printed something that is not bench rows.</exception>
    public IReadOnlyList<BenchResult> Run(LlamaCppReferenceRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var start = new ProcessStartInfo(_fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        foreach (string a in _prefixArguments.Concat(request.ToArguments())) start.ArgumentList.Add(a);

        string stdout, stderr;
        int exitCode;
        try
        {
            using var process = Process.Start(start) ?? throw new LlamaCppReferenceException($"{Describe()} did not start");
            // Both streams are drained concurrently so neither pipe can fill up and block the child.
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            process.WaitForExit();
            stdout = output.GetAwaiter().GetResult();
            stderr = error.GetAwaiter().GetResult();
            exitCode = process.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new LlamaCppReferenceException($"could not start {_fileName}: {e.Message}", e);
        }

        if (exitCode != 0)
            throw new LlamaCppReferenceException($"{Describe()} exited with code {exitCode}: {Tail(stderr)}");
        try
        {
            // Rows are the lines that start with '{'; anything else on stdout is build chatter from the
            // `dotnet run` fallback (restore and build messages, warnings) and is not ours to parse.
            string rowLines = string.Join('\n', stdout.Split('\n').Where(l => l.TrimStart().StartsWith('{')));
            var rows = BenchOutput.ReadJsonLines(rowLines, "llama.cpp reference output");
            if (rows.Count == 0) throw new LlamaCppReferenceException($"{Describe()} printed no rows: {Tail(stderr + stdout)}");
            return rows;
        }
        catch (FormatException e)
        {
            throw new LlamaCppReferenceException(e.Message, e);
        }
    }

    /// <summary>
    /// Sets <see cref="BenchResult.RatioVsLlamacpp"/> on each of <paramref name="rows"/> that has a reference row for the
    /// same model file, test (n_prompt, n_gen, n_depth), threads, batch sizes and KV cache type: our avg_ts / llama.cpp's avg_ts.
    /// </summary>
    public static void AttachRatios(IEnumerable<BenchResult> rows, IReadOnlyList<BenchResult> referenceRows)
    {
        var byKey = new Dictionary<(string, int, int, int, int, int, int, string), BenchResult>();
        foreach (var r in referenceRows) byKey.TryAdd(Key(r), r);
        foreach (var row in rows)
        {
            if (row.Backends == Backend) continue;
            if (byKey.TryGetValue(Key(row), out var reference) && reference.AvgTs > 0) row.RatioVsLlamacpp = row.AvgTs / reference.AvgTs;
        }

        static (string, int, int, int, int, int, int, string) Key(BenchResult r)
            => (Path.GetFullPath(r.ModelFilename), r.NPrompt, r.NGen, r.NDepth, r.NThreads, r.NBatch, r.NUbatch, r.TypeKv);
    }

    /// <summary>The dotnet host running this process when it is one, else DOTNET_HOST_PATH, else "dotnet" from PATH.</summary>
    private static string DotnetHost()
    {
        string? current = Environment.ProcessPath;
        if (current is not null && Path.GetFileNameWithoutExtension(current).Equals("dotnet", StringComparison.OrdinalIgnoreCase)) return current;
        return Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
    }

    private static string Tail(string text)
    {
        string trimmed = text.Trim();
        if (trimmed.Length == 0) return "(no error output)";
        return trimmed.Length <= 800 ? trimmed : "…" + trimmed[^800..];
    }
}

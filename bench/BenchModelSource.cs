using PluginEngine.Core.Models;

namespace PluginEngine.Bench;

/// <summary>A bench model: what the user named (<see cref="Label"/>) and the GGUF file it resolved to.</summary>
/// <param name="Label">The file name, "synthetic:tinyllama:Q4_0", or "demo".</param>
/// <param name="Path">Full path of the GGUF file.</param>
public sealed record BenchModelSource(string Label, string Path)
{
    /// <summary>Prefix of a <c>-m</c> value that names a generated model instead of a file.</summary>
    public const string SyntheticPrefix = "synthetic:";

    /// <summary>Bump when the generator's output for a shape changes, so stale cached files are not reused.</summary>
    private const int SyntheticVersion = 2;

    /// <summary>Shapes <c>--synthetic SHAPE:TYPE</c> knows.</summary>
    public static IReadOnlyList<string> SyntheticShapes { get; } = ["tinyllama", "llama7b", "demo"];

    /// <summary>The demo model (generated and cached on first use).</summary>
    public static BenchModelSource Demo(Action<string>? log) => new("demo", DemoModel.EnsureExists(log));

    /// <summary>A model file; it must exist.</summary>
    /// <exception cref="BenchParameterException">The file does not exist.</exception>
    public static BenchModelSource File(string path)
    {
        if (!System.IO.File.Exists(path)) throw new BenchParameterException($"-m {path}: model file not found");
        return new BenchModelSource(System.IO.Path.GetFileName(path), System.IO.Path.GetFullPath(path));
    }

    /// <summary>
    /// A generated model from <c>SHAPE:TYPE</c> (e.g. <c>tinyllama:Q4_0</c>; shapes: tinyllama = TinyLlama-1.1B's shape, llama7b = Llama-2-7B's, demo =
    /// the demo model's), generated into the model cache on first use (<see cref="DemoModel.EnsureExists(SyntheticModelSpec, string, Action{string}?)"/>).
    /// <c>SHAPE:TYPE:CONTEXT</c> gives the model a longer (or shorter) context length than its shape's, for tests at depth
    /// (<c>llama7b:Q4_0:20480 -d 16384</c>); its weights are the same.
    /// </summary>
    /// <exception cref="BenchParameterException">The shape, type or context is invalid; the message lists the known ones.</exception>
    public static BenchModelSource Synthetic(string value, Action<string>? log)
    {
        string[] parts = value.Split(':');
        string types = string.Join(", ", Enum.GetNames<SyntheticWeightType>());
        if (parts.Length is < 2 or > 3 || parts[0].Length == 0 || parts[1].Length == 0)
            throw new BenchParameterException($"--synthetic {value}: expected SHAPE:TYPE or SHAPE:TYPE:CONTEXT, e.g. tinyllama:Q4_0 (shapes: {string.Join(", ", SyntheticShapes)}; types: {types})");
        if (!Enum.TryParse(parts[1], ignoreCase: true, out SyntheticWeightType type) || !Enum.IsDefined(type) || int.TryParse(parts[1], out _))
            throw new BenchParameterException($"--synthetic {value}: unknown weight type '{parts[1]}' (types: {types})");
        int context = 0; // 0: the shape's
        if (parts.Length == 3 && (!int.TryParse(parts[2], out context) || context < MinSyntheticContext || context > MaxSyntheticContext))
            throw new BenchParameterException($"--synthetic {value}: context '{parts[2]}' must be an integer from {MinSyntheticContext} to {MaxSyntheticContext}");
        string shape = parts[0].ToLowerInvariant();
        var spec = shape switch
        {
            "tinyllama" => SyntheticModelSpec.TinyLlamaShape(type),
            "llama7b" => SyntheticModelSpec.Llama2_7BShape(type),
            "demo" => SyntheticModelSpec.Demo with { Name = $"demo-shape-{type}", WeightType = type },
            _ => throw new BenchParameterException($"--synthetic {value}: unknown shape '{parts[0]}' (shapes: {string.Join(", ", SyntheticShapes)})"),
        };
        if (context > 0) spec = spec with { ContextLength = context };
        string path = DemoModel.EnsureExists(spec, $"synthetic-{shape}-{(context > 0 ? $"ctx{context}-" : "")}{type}-v{SyntheticVersion}.gguf", log);
        return new BenchModelSource($"{SyntheticPrefix}{shape}:{type}{(context > 0 ? $":{context}" : "")}", path);
    }

    /// <summary>Bounds of a synthetic model's CONTEXT.</summary>
    public const int MinSyntheticContext = 16, MaxSyntheticContext = 1 << 20;

    /// <summary>A <c>-m</c> value: <c>synthetic:SHAPE:TYPE</c> or a file path.</summary>
    public static BenchModelSource Resolve(string value, Action<string>? log)
        => value.StartsWith(SyntheticPrefix, StringComparison.OrdinalIgnoreCase) ? Synthetic(value[SyntheticPrefix.Length..], log) : File(value);
}

/// <summary>A bench parameter is invalid; the message names the option and the bad value.</summary>
public sealed class BenchParameterException(string message) : Exception(message);

using System.Globalization;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;

namespace PluginEngine.Bench;

/// <summary>The model columns of a bench row, read from a GGUF file's header (no tensor data is touched).</summary>
/// <param name="Architecture">general.architecture.</param>
/// <param name="SizeBytes">Bytes of tensor data (model_size).</param>
/// <param name="Parameters">Tensor elements (model_n_params).</param>
/// <param name="FileTypeName">llama.cpp's name of the file type ("Q4_0", "Q4_K - Medium", …).</param>
public sealed record BenchModelFacts(string Architecture, long SizeBytes, long Parameters, string FileTypeName)
{
    /// <summary>llama-bench-style model_type: "llama 1.1B Q4_0".</summary>
    public string ModelType => $"{Architecture} {FormatParameters(Parameters)} {FileTypeName}";

    /// <summary>Reads the facts of <paramref name="file"/>.</summary>
    public static BenchModelFacts From(GgufFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        long size = 0, parameters = 0;
        foreach (var t in file.Tensors)
        {
            size += t.Info.ByteSize;
            parameters += t.Info.ElementCount;
        }
        string architecture = file.GetStringOrDefault("general.architecture") ?? "unknown";
        return new BenchModelFacts(architecture, size, parameters, DescribeFileType(file));
    }

    /// <summary>1.1B, 21M, 512K: parameter counts the way model cards write them.</summary>
    public static string FormatParameters(long parameters) => parameters switch
    {
        >= 1_000_000_000 => (parameters / 1e9).ToString("0.#", CultureInfo.InvariantCulture) + "B",
        >= 1_000_000 => (parameters / 1e6).ToString("0.#", CultureInfo.InvariantCulture) + "M",
        >= 1_000 => (parameters / 1e3).ToString("0.#", CultureInfo.InvariantCulture) + "K",
        _ => parameters.ToString(CultureInfo.InvariantCulture),
    };

    /// <summary>
    /// The name llama.cpp gives general.file_type (llama_ftype); when the key is missing or unknown, the type holding
    /// the most bytes among 2-D tensors (what a file mostly is).
    /// </summary>
    private static string DescribeFileType(GgufFile file)
    {
        if (file.TryGet("general.file_type", out var value) && !value.IsArray && GgufValueTypes.IsInteger(value.Type)
            && (value.Type != GgufValueType.UInt64 || value.AsUInt64() <= long.MaxValue))
        {
            long code = value.AsInt64();
            string? known = code switch
            {
                0 => "all F32", 1 => "F16", 2 => "Q4_0", 3 => "Q4_1", 7 => "Q8_0", 8 => "Q5_0", 9 => "Q5_1",
                10 => "Q2_K - Medium", 11 => "Q3_K - Small", 12 => "Q3_K - Medium", 13 => "Q3_K - Large",
                14 => "Q4_K - Small", 15 => "Q4_K - Medium", 16 => "Q5_K - Small", 17 => "Q5_K - Medium", 18 => "Q6_K",
                32 => "BF16",
                _ => null,
            };
            if (known is not null) return known;
        }
        var dominant = file.Tensors.Where(t => t.Info.Dims.Count >= 2)
            .GroupBy(t => t.Info.Type)
            .Select(g => (Type: g.Key, Bytes: g.Sum(t => t.Info.ByteSize)))
            .OrderByDescending(g => g.Bytes)
            .FirstOrDefault();
        return dominant.Bytes > 0 ? dominant.Type.ToString() : "unknown";
    }
}

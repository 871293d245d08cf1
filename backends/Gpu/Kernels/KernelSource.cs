using System.Globalization;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.Gpu.Kernels;

/// <summary>Which run-time compiler a translation unit is for: the portability header picks its branch from this.</summary>
internal enum KernelDialect
{
    /// <summary>NVRTC: PE_CUDA, warp 32.</summary>
    Cuda,

    /// <summary>hiprtc: PE_HIP, warp 32 or 64 from the device.</summary>
    Hip,
}

/// <summary>
/// The one kernel source (the embedded kernels.cu) with the host's constants prepended as <c>#define</c>s, so the
/// kernels and the launch arithmetic in <see cref="LaunchGeometry"/> cannot disagree, then the vendor's defines and
/// gpu_portability.h, which maps what NVRTC and hiprtc spell differently.
/// </summary>
internal static class KernelSource
{
    /// <summary>Name the compilers report errors under.</summary>
    public const string ProgramName = "pluginengine_kernels.cu";

    private static readonly Lazy<string> Body = new(() => Resource("PluginEngine.Backends.Gpu.kernels.cu"));

    private static readonly Lazy<string> PortabilityHeader = new(() => Resource("PluginEngine.Backends.Gpu.gpu_portability.h"));

    private static string Resource(string name)
    {
        using var stream = typeof(KernelSource).Assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"{name} is not embedded in the shared GPU assembly");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    /// <summary>The defines the kernels require, in the order they are emitted.</summary>
    public static IReadOnlyList<(string Name, int Value)> Defines { get; } =
    [
        ("ROW_CHUNK", LaunchGeometry.RowChunkElements),
        ("MATMUL_TOKENS_PER_BLOCK", LaunchGeometry.MatMulTokensPerBlock),
        ("MATMUL_Q8_TOKENS", LaunchGeometry.MatMulQ8Tokens),
        ("MMQ_KSPLIT", LaunchGeometry.MmqWarps),
        ("MMQ_ROWS", LaunchGeometry.MmqRows),
        ("TQ_GROUP", LaunchGeometry.TiledQ4_0GroupElements),
        ("ATTENTION_MAX_HEAD", LaunchGeometry.AttentionMaxHeadSize),
        ("ATTENTION_WARPS", LaunchGeometry.AttentionWarps),
    ];

    /// <summary>The complete CUDA translation unit handed to NVRTC (no tuning defines).</summary>
    public static string CudaDefault { get; } = Assemble(KernelDialect.Cuda, 32);

    /// <summary>The vendor's defines: PE_CUDA or PE_HIP, and the device's warp.</summary>
    public static IReadOnlyList<(string Name, int Value)> DialectDefines(KernelDialect dialect, int deviceWarp)
    {
        if (deviceWarp is not (32 or 64)) throw new ArgumentOutOfRangeException(nameof(deviceWarp), $"a warp of {deviceWarp} lanes (32 or 64 supported)");
        if (dialect == KernelDialect.Cuda && deviceWarp != 32) throw new ArgumentOutOfRangeException(nameof(deviceWarp), "CUDA warps are 32 wide");
        return [(dialect == KernelDialect.Cuda ? "PE_CUDA" : "PE_HIP", 1), ("PE_DEVICE_WARP", deviceWarp)];
    }

    /// <summary>The translation unit for <paramref name="dialect"/> with tuning defines (see <see cref="ParseTuningDefines"/>) after the host's.</summary>
    public static string For(KernelDialect dialect, int deviceWarp, string tuningDefines)
        => dialect == KernelDialect.Cuda && deviceWarp == 32 && string.IsNullOrEmpty(tuningDefines)
            ? CudaDefault
            : Assemble(dialect, deviceWarp, ParseTuningDefines(tuningDefines ?? "", "defines"));

    /// <summary>Host defines, tuning defines, vendor defines, then the portability header and the kernels.</summary>
    public static string Assemble(KernelDialect dialect, int deviceWarp, IReadOnlyList<(string Name, int Value)>? tuning = null)
    {
        var sb = new StringBuilder();
        tuning ??= [];
        foreach (var (name, value) in Defines.Where(d => !tuning.Any(t => t.Name == d.Name)).Concat(tuning).Concat(DialectDefines(dialect, deviceWarp)))
            sb.Append("#define ").Append(name).Append(' ').Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
        sb.Append("#line 1 \"gpu_portability.h\"\n").Append(PortabilityHeader.Value);
        if (!PortabilityHeader.Value.EndsWith('\n')) sb.Append('\n');
        sb.Append("#line 1 \"kernels.cu\"\n");
        return sb.Append(Body.Value).ToString();
    }

    /// <summary>
    /// The names a tuning define may take: every macro the kernel source gives a default with <c>#ifndef NAME</c>, less the
    /// host's <see cref="Defines"/> (MMQ_ROWS excepted, see <see cref="ParseTuningDefines"/>) and the vendor's (PE_*). Read
    /// from the source, so a knob added to kernels.cu is accepted without a list to keep in step.
    /// </summary>
    public static IReadOnlyCollection<string> TuningDefineNames => TuningNames.Value;

    private static readonly Lazy<SortedSet<string>> TuningNames = new(() => new SortedSet<string>(
        System.Text.RegularExpressions.Regex.Matches(PortabilityHeader.Value + "\n" + Body.Value, @"(?m)^[ \t]*#ifndef[ \t]+([A-Z_][A-Z0-9_]*)")
            .Select(m => m.Groups[1].Value)
            .Where(n => n == "MMQ_ROWS" || (!Defines.Any(d => d.Name == n) && !n.StartsWith("PE_", StringComparison.Ordinal))),
        StringComparer.Ordinal));

    /// <summary>
    /// "NAME=INT;NAME=INT": kernel tuning macros for experiments (kernels.cu's MATVEC_UNROLL, SWIGLU_UNROLL, MATVEC_MIN_BLOCKS;
    /// any of <see cref="TuningDefineNames"/>). Throws <see cref="PluginOptionException"/> naming <paramref name="where"/> for a
    /// malformed entry, one of the host's own <see cref="Defines"/> (which must stay what the launch arithmetic assumes), or a
    /// name the kernels do not read (a misspelt knob would otherwise change nothing, silently).
    /// </summary>
    public static IReadOnlyList<(string Name, int Value)> ParseTuningDefines(string spec, string where)
    {
        var result = new List<(string, int)>();
        foreach (string entry in spec.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = entry.IndexOf('=');
            string name = eq > 0 ? entry[..eq].Trim() : "";
            if (eq <= 0 || !System.Text.RegularExpressions.Regex.IsMatch(name, "^[A-Z_][A-Z0-9_]*$")
                || !int.TryParse(entry[(eq + 1)..].Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
                throw new PluginOptionException($"{where}: '{entry}' is not NAME=INTEGER (upper-case macro name)");
            if (name == "MMQ_ROWS")
            {
                // The one host define an experiment may move: the launch reads it back (MmqRows below).
                if (value is not (8 or 16 or 32)) throw new PluginOptionException($"{where}: MMQ_ROWS must be 8, 16 or 32 (rows per mmq block), not {value}");
            }
            else if (Defines.Any(d => d.Name == name))
                throw new PluginOptionException($"{where}: {name} is set by the host (launch geometry) and cannot be overridden");
            else if (!TuningNames.Value.Contains(name))
                throw new PluginOptionException($"{where}: {name} is not a tuning define of the kernels (they are: {string.Join(", ", TuningNames.Value)})");
            if (result.Exists(d => d.Item1 == name)) throw new PluginOptionException($"{where}: {name} is given twice");
            result.Add((name, value));
        }
        return result;
    }

    /// <summary>Weight rows per mmq block that kernels compiled with <paramref name="tuningDefines"/> (normalized "NAME=INT;…") assume:
    /// MMQ_ROWS where the defines set it, else <see cref="LaunchGeometry.MmqRows"/>.</summary>
    public static int MmqRows(string tuningDefines)
    {
        foreach (var (name, value) in ParseTuningDefines(tuningDefines ?? "", "defines"))
            if (name == "MMQ_ROWS") return value;
        return LaunchGeometry.MmqRows;
    }

    /// <summary>Kernel-name suffix of a weight type (matmul_&lt;suffix&gt;_t1, get_rows_&lt;suffix&gt;), or null when no kernel reads it.</summary>
    public static string? WeightSuffix(GgmlType type) => type switch
    {
        GgmlType.F32 => "f32",
        GgmlType.F16 => "f16",
        GgmlType.BF16 => "bf16",
        GgmlType.Q8_0 => "q8_0",
        GgmlType.Q4_0 => "q4_0",
        GgmlType.Q4_K => "q4_k",
        GgmlType.Q5_K => "q5_k",
        GgmlType.Q6_K => "q6_k",
        _ => null,
    };

    /// <summary>Kernel-name suffix of Q4_0 weights in the tiled layout (mmq_q4_0_tiled_x&lt;m&gt;; docs/gpu-kernels.md#tiled-q4_0-weights).</summary>
    public const string TiledQ4_0Suffix = "q4_0_tiled";

    /// <summary>Weight types the matmul and get-rows kernels read.</summary>
    public static IReadOnlyList<GgmlType> WeightTypes { get; } =
        [GgmlType.F32, GgmlType.F16, GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];

    /// <summary>Weight types with 8-bit-activation kernels (matmul_q8_&lt;suffix&gt;, and the decode kernels of <see cref="DecodeMatVecTypes"/>); their rows are whole 32-element blocks.</summary>
    public static IReadOnlyList<GgmlType> Int8MatVecTypes { get; } = [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q6_K];

    /// <summary>
    /// Weight types with one-token decode kernels (matvec_, swiglu_, matvec_rope_ + <see cref="DecodeKernelSuffix"/>): the
    /// <see cref="Int8MatVecTypes"/> on 8-bit activations, then the plain types on F32 ones.
    /// </summary>
    public static IReadOnlyList<GgmlType> DecodeMatVecTypes { get; } = [.. Int8MatVecTypes, GgmlType.F32, GgmlType.F16, GgmlType.BF16];

    /// <summary>The decode kernels' suffix: q8_&lt;type&gt; for the int8 types (8-bit activations), &lt;type&gt; for the plain ones.</summary>
    public static string DecodeKernelSuffix(GgmlType type) => (Int8MatVecTypes.Contains(type) ? "q8_" : "") + WeightSuffix(type);

    /// <summary>Weight types with an int8 tensor-core kernel (mmq_&lt;suffix&gt;_x&lt;m&gt;, CUDA sm_80 and later; docs/gpu-kernels.md#int8-tensor-core-matmuls-mmq).</summary>
    public static IReadOnlyList<GgmlType> MmaTypes { get; } = [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K];

    /// <summary>Weight types the prompt path dequantizes to F16 for the vendor BLAS (dequantize_f16_&lt;suffix&gt;); F16 is used as it is, F32 in F32.</summary>
    public static IReadOnlyList<GgmlType> DequantizeF16Types { get; } = [GgmlType.BF16, GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];

    /// <summary>
    /// KV cache types the GPU queue keeps on the device (Attention and Convert): the attention kernels read them (attention_,
    /// attention_decode_, attention_split_, attention_rows_ + their <see cref="WeightSuffix"/>), and F32 values are stored into them
    /// (copy_f32, convert_f32_f16, and for the <see cref="BlockCacheTypes"/> convert_f32_&lt;suffix&gt; / store_kv_&lt;suffix&gt;).
    /// Q8_0 and Q4_0 are kept on the device only with the q8_0_cache / q4_0_cache options (docs/gpu-kernels.md#q8_0-kv-cache).
    /// </summary>
    public static IReadOnlyList<GgmlType> CacheTypes { get; } = [GgmlType.F32, GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0];

    /// <summary>The KV cache types stored in 32-element blocks (convert_f32_&lt;suffix&gt;, store_kv_&lt;suffix&gt;).</summary>
    public static IReadOnlyList<GgmlType> BlockCacheTypes { get; } = [GgmlType.Q8_0, GgmlType.Q4_0];

    /// <summary>The KV cache types whose prompts may attend on the tensor cores (attention_mma_{f16,q8_0,q4_0}_d{64,128}).</summary>
    public static IReadOnlyList<GgmlType> MmaCacheTypes { get; } = [GgmlType.F16, GgmlType.Q8_0, GgmlType.Q4_0];

    /// <summary>Every extern "C" kernel the queue looks up.</summary>
    public static IEnumerable<string> KernelNames()
    {
        foreach (var t in WeightTypes)
        {
            string s = WeightSuffix(t)!;
            yield return $"matmul_{s}_t1";
            yield return $"matmul_{s}_tn";
            yield return $"get_rows_{s}";
        }
        foreach (var t in Int8MatVecTypes) yield return $"matmul_q8_{WeightSuffix(t)}";
        foreach (var t in DecodeMatVecTypes)
        {
            yield return $"matvec_{DecodeKernelSuffix(t)}";
            yield return $"swiglu_{DecodeKernelSuffix(t)}";
            yield return $"matvec_rope_{DecodeKernelSuffix(t)}";
        }
        foreach (var t in MmaTypes)
            foreach (int m in LaunchGeometry.MmqTokenTiles)
                yield return LaunchGeometry.MmqKernelName(WeightSuffix(t)!, m);
        foreach (int m in LaunchGeometry.MmqTokenTiles) yield return LaunchGeometry.MmqKernelName(TiledQ4_0Suffix, m);
        yield return "tile_q4_0";
        foreach (var t in DequantizeF16Types) yield return $"dequantize_f16_{WeightSuffix(t)}";
        foreach (var t in MmaCacheTypes)
            foreach (int d in new[] { 64, 128 }) yield return LaunchGeometry.AttentionMmaKernelName(d, WeightSuffix(t)!);
        foreach (var t in CacheTypes)
        {
            foreach (string kind in new[] { "attention_", "attention_decode_", "attention_split_", "attention_rows_" })
                yield return kind + WeightSuffix(t);
            foreach (string kind in new[] { "decode", "split", "rows" })
                yield return LaunchGeometry.AttentionStepKernelName(kind, WeightSuffix(t)!, LaunchGeometry.AttentionNarrowHeadSize);
        }
        foreach (var k in new[] { "quantize_x_q8", "rms_norm", "rms_norm_q8_row", "rope", "rope_store_kv", "rope_store_kv_rows", "silu_mul", "add", "add_bias", "copy_f32", "convert_f32_f16" })
            yield return k;
        foreach (var t in BlockCacheTypes)
        {
            yield return $"convert_f32_{WeightSuffix(t)}";
            yield return $"store_kv_{WeightSuffix(t)}";
        }
    }

    /// <summary>Cache key of the compiled image: source, target architecture (sm_90, gfx90a) and compiler version.</summary>
    public static string CacheKey(string source, string target, string compilerVersion)
    {
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{source}\n--{target}\n--compiler {compilerVersion}\n--plugin {Assembly.GetExecutingAssembly().GetName().Version}"));
        return Convert.ToHexString(hash, 0, 16).ToLowerInvariant();
    }
}

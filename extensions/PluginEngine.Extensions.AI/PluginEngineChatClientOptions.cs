using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;

namespace PluginEngine.Extensions.AI;

/// <summary>
/// What <see cref="PluginEngineChatClient"/> loads and how: the same choices as the <c>pluginengine</c> command line's
/// model flags (each property names its flag), resolved the same way through the same plugins.json and plugin host.
/// </summary>
public sealed class PluginEngineChatClientOptions
{
    /// <summary><c>-m</c>: the GGUF model file; null: the demo model (random weights, generated on first use).</summary>
    public string? ModelPath { get; set; }

    /// <summary><c>--plugins</c>: the plugins.json to use; null: PLUGINENGINE_PLUGINS, ./plugins.json, then upwards from the app's folder, then CPU only.</summary>
    public string? PluginsPath { get; set; }

    /// <summary><c>--backend</c>: the backend to run on; null: the first available in plugins.json's preference order.</summary>
    public string? Backend { get; set; }

    /// <summary><c>-ngl</c>: layers on the selected backend counted from the first (the rest on the CPU); negative: all.</summary>
    public int GpuLayers { get; set; } = -1;

    /// <summary><c>-t</c>: CPU threads; null: plugins.json's cpu option, else all cores.</summary>
    public int? Threads { get; set; }

    /// <summary><c>--hugepages</c>: hold the model in 2 MiB huge pages (Linux, reserved pool).</summary>
    public bool HugePages { get; set; }

    /// <summary><c>--no-mmap</c>: read the model into heap memory instead of mapping the file.</summary>
    public bool NoMmap { get; set; }

    /// <summary><c>--host-import</c>: null leaves it to PLUGINENGINE_HOST_IMPORT, then auto.</summary>
    public HostImportMode? HostImport { get; set; }

    /// <summary><c>--check-tensors</c>: decode every weight at load and reject NaN/Inf, naming the tensor.</summary>
    public bool CheckTensors { get; set; }

    /// <summary><c>-c</c>: positions of the KV cache; null: min(model's context length, 4096).</summary>
    public int? ContextSize { get; set; }

    /// <summary><c>-b</c>: prompt tokens per forward pass.</summary>
    public int BatchSize { get; set; } = 512;

    /// <summary>
    /// <c>--kv-type</c>: the KV cache element type, for both K and V: F16, F32, Q8_0 or Q4_0 (Q8_0 about half of F16's bytes,
    /// Q4_0 about a quarter; both need a head size that is a multiple of 32). Null: F32 when <see cref="KvCacheF32"/>, else F16.
    /// </summary>
    public GgmlType? KvCacheType { get; set; }

    /// <summary><c>--kv-f32</c>: keep the KV cache in F32 instead of F16 (the same as <see cref="KvCacheType"/> = F32).</summary>
    public bool KvCacheF32 { get; set; }

    /// <summary>The KV cache type <see cref="KvCacheType"/> and <see cref="KvCacheF32"/> ask for; an <see cref="ArgumentException"/> when they contradict or name a type a cache cannot have.</summary>
    internal GgmlType ResolveKvCacheType()
    {
        if (KvCacheType is not { } type) return KvCacheF32 ? GgmlType.F32 : GgmlType.F16;
        if (!KvCacheTypes.Supported.Contains(type))
            throw new ArgumentException($"{nameof(KvCacheType)} {type}: expected {string.Join(", ", KvCacheTypes.Supported)}", nameof(KvCacheType));
        if (KvCacheF32 && type != GgmlType.F32)
            throw new ArgumentException($"{nameof(KvCacheF32)} and {nameof(KvCacheType)} = {type} contradict each other; set one", nameof(KvCacheType));
        return type;
    }

    /// <summary><c>--chat-template</c>: a built-in template name or a file; null: the model's own template.</summary>
    public string? ChatTemplate { get; set; }

    /// <summary><c>--parse-special</c>: parse special-token text in messages as special tokens (default: plain text).</summary>
    public bool ParseSpecialInMessages { get; set; }

    /// <summary>Most tokens per answer when <c>ChatOptions.MaxOutputTokens</c> is not set.</summary>
    public int DefaultMaxOutputTokens { get; set; } = 1024;
}

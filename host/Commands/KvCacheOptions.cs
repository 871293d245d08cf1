using System.CommandLine;
using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;

namespace PluginEngine.Host.Commands;

/// <summary>
/// The KV cache type flags of the commands that create a context (<c>run</c>, <c>chat</c>, <c>serve</c>, <c>logits</c>):
/// <c>--kv-type f16|f32|q8_0|q4_0</c> (also <c>--cache-type</c> and <c>-ctk</c>, llama.cpp's names; one type for both K and V)
/// and the older <c>--kv-f32</c>, an alias of <c>--kv-type f32</c> (docs/batching.md#quantized-kv-cache).
/// </summary>
public sealed class KvCacheOptions
{
    public Option<string?> Type { get; } = new("--kv-type", "--cache-type", "-ctk")
    {
        Description = $"KV cache element type, for both K and V: {KvCacheTypes.AcceptedNames} (default f16; q8_0 and q4_0 need a head size that is a multiple of 32)",
        HelpName = string.Join('|', KvCacheTypes.Supported.Select(KvCacheTypes.Name)),
    };

    public Option<bool> F32 { get; } = new("--kv-f32") { Description = "Keep the KV cache in F32 instead of F16 (same as --kv-type f32)" };

    public void AddTo(Command command)
    {
        command.Options.Add(Type);
        command.Options.Add(F32);
    }

    /// <summary>The type the flags ask for (F16 without them); a bad name or a contradiction is a <see cref="UserErrorException"/>.</summary>
    public GgmlType Resolve(ParseResult parse)
    {
        bool f32 = parse.GetValue(F32);
        if (parse.GetValue(Type) is not { } name) return f32 ? GgmlType.F32 : GgmlType.F16;
        if (!KvCacheTypes.TryParse(name, out var type))
            throw new UserErrorException($"--kv-type {name}: expected {KvCacheTypes.AcceptedNames}", isUsage: true);
        if (f32 && type != GgmlType.F32)
            throw new UserErrorException($"--kv-f32 and --kv-type {name} contradict each other; give one", isUsage: true);
        return type;
    }
}

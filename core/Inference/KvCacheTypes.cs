using PluginEngine.Abstractions;
using PluginEngine.Core.Models;

namespace PluginEngine.Core.Inference;

/// <summary>
/// The KV cache element types a <see cref="LlamaContext"/> accepts, their names on the command line and in bench rows
/// (<c>--kv-type f16|f32|q8_0|q4_0</c>, the <c>type_kv</c> column), and what each needs of a model
/// (docs/batching.md#quantized-kv-cache).
/// </summary>
public static class KvCacheTypes
{
    /// <summary>Every accepted type, the default (F16) first.</summary>
    public static IReadOnlyList<GgmlType> Supported { get; } = [GgmlType.F16, GgmlType.F32, GgmlType.Q8_0, GgmlType.Q4_0];

    /// <summary>"f16, f32, q8_0 or q4_0": the accepted names, for messages.</summary>
    public static string AcceptedNames { get; } = string.Join(", ", Supported.Take(Supported.Count - 1).Select(Name)) + " or " + Name(Supported[^1]);

    /// <summary>The lower-case name llama.cpp gives the type (f16, q8_0, …).</summary>
    public static string Name(GgmlType type) => type.ToString().ToLowerInvariant();

    /// <summary>The type called <paramref name="name"/> (case-insensitive), or false when it is not an accepted KV cache type.</summary>
    public static bool TryParse(string? name, out GgmlType type)
    {
        foreach (var t in Supported)
            if (string.Equals(name?.Trim(), Name(t), StringComparison.OrdinalIgnoreCase)) { type = t; return true; }
        type = default;
        return false;
    }

    /// <summary>The type called <paramref name="name"/>; an <see cref="ArgumentException"/> naming <paramref name="option"/> and the accepted names otherwise.</summary>
    public static GgmlType Parse(string name, string option)
        => TryParse(name, out var type) ? type : throw new ArgumentException($"{option} {name}: expected {AcceptedNames}");

    /// <summary>True for the block-quantized cache types (Q8_0, Q4_0).</summary>
    public static bool IsQuantized(GgmlType type) => GgmlTypes.Get(type).IsQuantized;

    /// <summary>
    /// Why a model with <paramref name="hp"/> cannot keep its KV cache in <paramref name="type"/>, or null when it can. A
    /// quantized cache stores each position's K (and V) row as 32-element blocks and every head is read from the start of a
    /// block, so the head size (and with it KvDim) must be a multiple of 32.
    /// </summary>
    public static string? Problem(GgmlType type, LlamaHyperParameters hp)
    {
        if (!Supported.Contains(type)) return $"KV cache type {type}: {AcceptedNames} only";
        if (!IsQuantized(type)) return null;
        int block = GgmlTypes.Get(type).BlockSize;
        return hp.HeadSize % block == 0 ? null
            : $"KV cache type {Name(type)} needs a head size that is a multiple of {block} ({Name(type)} stores each position's keys and values " +
              $"as blocks of {block} elements, and each head must start a block); this model's head size is {hp.HeadSize}: use f16 or f32";
    }

    /// <summary>Bytes one position takes in one layer's cache: K and V, each a row of KvDim elements.</summary>
    public static long BytesPerPosition(GgmlType type, LlamaHyperParameters hp) => 2 * GgmlTypes.RowSize(type, hp.KvDim);
}

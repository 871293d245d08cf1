using System.Collections.ObjectModel;

namespace PluginEngine.Core.Gguf;

/// <summary>
/// The parsed header of a GGUF file: version, metadata (in file order), tensor descriptions and the
/// layout of the data section. Tensor data is not read; <see cref="GgufTensor.FileOffset"/> says where it is.
/// Produced by <see cref="GgufReader"/>, which has validated every field.
/// </summary>
public sealed class GgufFile
{
    /// <summary>Alignment used when <c>general.alignment</c> is absent.</summary>
    public const uint DefaultAlignment = 32;

    private readonly Dictionary<string, GgufTensor> _tensorsByName;

    internal GgufFile(string path, uint version, long fileLength, uint alignment, long dataSectionOffset,
        OrderedDictionary<string, GgufValue> metadata, GgufTensor[] tensors)
    {
        Path = path;
        Version = version;
        FileLength = fileLength;
        Alignment = alignment;
        DataSectionOffset = dataSectionOffset;
        Metadata = new ReadOnlyDictionary<string, GgufValue>(metadata);
        Tensors = System.Array.AsReadOnly(tensors);
        _tensorsByName = new Dictionary<string, GgufTensor>(tensors.Length, StringComparer.Ordinal);
        foreach (var t in tensors) _tensorsByName.Add(t.Name, t);
    }

    /// <summary>File path (or the display name given for a stream).</summary>
    public string Path { get; }

    /// <summary>Format version (2 or 3).</summary>
    public uint Version { get; }

    /// <summary>Total length of the file in bytes.</summary>
    public long FileLength { get; }

    /// <summary>Alignment of tensor data: <c>general.alignment</c>, or 32.</summary>
    public uint Alignment { get; }

    /// <summary>Absolute offset of the data section (end of the tensor infos, rounded up to <see cref="Alignment"/>).</summary>
    public long DataSectionOffset { get; }

    /// <summary>Metadata key/value pairs; enumeration follows file order.</summary>
    public IReadOnlyDictionary<string, GgufValue> Metadata { get; }

    /// <summary>Tensors in file order.</summary>
    public IReadOnlyList<GgufTensor> Tensors { get; }

    /// <summary>The tensor named <paramref name="name"/>, or null.</summary>
    public GgufTensor? FindTensor(string name) => _tensorsByName.GetValueOrDefault(name);

    /// <summary>The tensor named <paramref name="name"/>; throws <see cref="KeyNotFoundException"/> naming it and the file.</summary>
    public GgufTensor GetTensor(string name)
        => FindTensor(name) ?? throw new KeyNotFoundException($"{Path}: no tensor named '{name}' (the file has {Tensors.Count} tensors)");

    /// <summary>Looks up a metadata value.</summary>
    public bool TryGet(string key, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out GgufValue value)
        => Metadata.TryGetValue(key, out value);

    /// <summary>The metadata value under <paramref name="key"/>; throws <see cref="KeyNotFoundException"/> naming the key and the file.</summary>
    public GgufValue Get(string key)
        => Metadata.TryGetValue(key, out var v) ? v : throw new KeyNotFoundException($"{Path}: metadata key '{key}' is missing");

    /// <summary>A required string value.</summary>
    public string GetString(string key) => Get(key).AsString();
    /// <summary>A required integer value that fits in UInt32.</summary>
    public uint GetUInt32(string key) => Get(key).AsUInt32();
    /// <summary>A required integer value that fits in Int32.</summary>
    public int GetInt32(string key) => Get(key).AsInt32();
    /// <summary>A required integer value that fits in UInt64.</summary>
    public ulong GetUInt64(string key) => Get(key).AsUInt64();
    /// <summary>A required integer value that fits in Int64.</summary>
    public long GetInt64(string key) => Get(key).AsInt64();
    /// <summary>A required float value.</summary>
    public float GetFloat32(string key) => Get(key).AsFloat32();
    /// <summary>A required bool value.</summary>
    public bool GetBool(string key) => Get(key).AsBool();
    /// <summary>A required string array.</summary>
    public IReadOnlyList<string> GetStringArray(string key) => Get(key).AsStringArray();
    /// <summary>A required Float32 array.</summary>
    public IReadOnlyList<float> GetFloat32Array(string key) => Get(key).AsFloat32Array();
    /// <summary>A required integer array, as Int32.</summary>
    public IReadOnlyList<int> GetInt32Array(string key) => Get(key).AsInt32Array();

    /// <summary>An optional string value: <paramref name="defaultValue"/> when the key is absent (a present value of the wrong type still throws).</summary>
    public string? GetStringOrDefault(string key, string? defaultValue = null) => TryGet(key, out var v) ? v.AsString() : defaultValue;
    /// <summary>An optional UInt32 value: <paramref name="defaultValue"/> when the key is absent.</summary>
    public uint GetUInt32OrDefault(string key, uint defaultValue) => TryGet(key, out var v) ? v.AsUInt32() : defaultValue;
    /// <summary>An optional Int32 value: <paramref name="defaultValue"/> when the key is absent.</summary>
    public int GetInt32OrDefault(string key, int defaultValue) => TryGet(key, out var v) ? v.AsInt32() : defaultValue;
    /// <summary>An optional UInt64 value: <paramref name="defaultValue"/> when the key is absent.</summary>
    public ulong GetUInt64OrDefault(string key, ulong defaultValue) => TryGet(key, out var v) ? v.AsUInt64() : defaultValue;
    /// <summary>An optional Float32 value: <paramref name="defaultValue"/> when the key is absent.</summary>
    public float GetFloat32OrDefault(string key, float defaultValue) => TryGet(key, out var v) ? v.AsFloat32() : defaultValue;
    /// <summary>An optional bool value: <paramref name="defaultValue"/> when the key is absent.</summary>
    public bool GetBoolOrDefault(string key, bool defaultValue) => TryGet(key, out var v) ? v.AsBool() : defaultValue;

    /// <inheritdoc/>
    public override string ToString() => $"{Path}: GGUF v{Version}, {Metadata.Count} metadata keys, {Tensors.Count} tensors, data at {DataSectionOffset}";
}

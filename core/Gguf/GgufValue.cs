using System.Collections;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace PluginEngine.Core.Gguf;

/// <summary>
/// One immutable GGUF metadata value: a scalar, a string, or an array (arrays may nest).
/// Arrays of scalars and strings are stored as one typed .NET array (<c>float[]</c>, <c>string[]</c>, …),
/// never as one object per element, because vocabularies hold 100k+ entries.
/// Typed accessors throw <see cref="GgufMetadataTypeException"/> naming the key and the actual type when the
/// value is not of the requested kind, and <see cref="GgufMetadataRangeException"/> when an integer does not fit.
/// </summary>
public sealed class GgufValue : IEquatable<GgufValue>
{
    // Scalars: integers live in _bits (signed ones sign-extended), floats as their IEEE bits, bools as 0/1.
    // Strings: _ref is the string. Arrays: _ref is a typed array (byte[], sbyte[], ushort[], short[], uint[],
    // int[], float[], bool[], string[], ulong[], long[], double[]) or GgufValue[] for nested arrays.
    private readonly ulong _bits;
    private readonly object? _ref;
    private readonly GgufValueType _elementType; // arrays only

    private GgufValue(GgufValueType type, GgufValueType elementType, ulong bits, object? reference, string? key)
    {
        Type = type;
        _elementType = elementType;
        _bits = bits;
        _ref = reference;
        Key = key;
    }

    /// <summary>The value's type tag.</summary>
    public GgufValueType Type { get; }

    /// <summary>For arrays, the type of every element; throws for non-arrays.</summary>
    public GgufValueType ElementType => Type == GgufValueType.Array ? _elementType : throw WrongType("an array");

    /// <summary>True when this value is an array.</summary>
    public bool IsArray => Type == GgufValueType.Array;

    /// <summary>Element count of an array; throws for non-arrays.</summary>
    public int Count => Type == GgufValueType.Array ? ((Array)_ref!).Length : throw WrongType("an array");

    /// <summary>The metadata key this value was read under (used in error messages), or null for values
    /// built in code. Array elements read through <see cref="AsArray"/> are named <c>key[i]</c>.</summary>
    public string? Key { get; }

    /// <summary>A copy of this value labelled with <paramref name="key"/> for error messages.</summary>
    public GgufValue WithKey(string? key) => new(Type, _elementType, _bits, _ref, key);

    // ---- scalar factories ----

    /// <summary>A <see cref="GgufValueType.UInt8"/> value.</summary>
    public static GgufValue UInt8(byte value) => Scalar(GgufValueType.UInt8, value);
    /// <summary>An <see cref="GgufValueType.Int8"/> value.</summary>
    public static GgufValue Int8(sbyte value) => Scalar(GgufValueType.Int8, (ulong)(long)value);
    /// <summary>A <see cref="GgufValueType.UInt16"/> value.</summary>
    public static GgufValue UInt16(ushort value) => Scalar(GgufValueType.UInt16, value);
    /// <summary>An <see cref="GgufValueType.Int16"/> value.</summary>
    public static GgufValue Int16(short value) => Scalar(GgufValueType.Int16, (ulong)(long)value);
    /// <summary>A <see cref="GgufValueType.UInt32"/> value.</summary>
    public static GgufValue UInt32(uint value) => Scalar(GgufValueType.UInt32, value);
    /// <summary>An <see cref="GgufValueType.Int32"/> value.</summary>
    public static GgufValue Int32(int value) => Scalar(GgufValueType.Int32, (ulong)(long)value);
    /// <summary>A <see cref="GgufValueType.UInt64"/> value.</summary>
    public static GgufValue UInt64(ulong value) => Scalar(GgufValueType.UInt64, value);
    /// <summary>An <see cref="GgufValueType.Int64"/> value.</summary>
    public static GgufValue Int64(long value) => Scalar(GgufValueType.Int64, (ulong)value);
    /// <summary>A <see cref="GgufValueType.Float32"/> value.</summary>
    public static GgufValue Float32(float value) => Scalar(GgufValueType.Float32, BitConverter.SingleToUInt32Bits(value));
    /// <summary>A <see cref="GgufValueType.Float64"/> value.</summary>
    public static GgufValue Float64(double value) => Scalar(GgufValueType.Float64, BitConverter.DoubleToUInt64Bits(value));
    /// <summary>A <see cref="GgufValueType.Bool"/> value.</summary>
    public static GgufValue Bool(bool value) => Scalar(GgufValueType.Bool, value ? 1UL : 0UL);

    /// <summary>A <see cref="GgufValueType.String"/> value (stored as UTF-8 in the file).</summary>
    public static GgufValue String(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        return new GgufValue(GgufValueType.String, default, 0, value, null);
    }

    private static GgufValue Scalar(GgufValueType type, ulong bits) => new(type, default, bits, null, null);

    // ---- array factories ----

    /// <summary>
    /// An array of <paramref name="elementType"/> built from individual values; every element must have
    /// that type (nested arrays may each have their own element type). Scalar and string elements are
    /// packed into one typed array.
    /// </summary>
    public static GgufValue Array(GgufValueType elementType, IReadOnlyList<GgufValue> elements)
    {
        ArgumentNullException.ThrowIfNull(elements);
        if (!GgufValueTypes.IsKnown((uint)elementType)) throw new ArgumentOutOfRangeException(nameof(elementType), elementType, "not a GGUF value type");
        for (int i = 0; i < elements.Count; i++)
        {
            var e = elements[i] ?? throw new ArgumentException($"array element {i} is null", nameof(elements));
            if (e.Type != elementType) throw new ArgumentException($"array element {i} is {e.Type}, but the array's element type is {elementType}", nameof(elements));
        }
        int n = elements.Count;
        Array storage = elementType switch
        {
            GgufValueType.UInt8 => Pack(elements, static v => (byte)v._bits),
            GgufValueType.Int8 => Pack(elements, static v => (sbyte)(long)v._bits),
            GgufValueType.UInt16 => Pack(elements, static v => (ushort)v._bits),
            GgufValueType.Int16 => Pack(elements, static v => (short)(long)v._bits),
            GgufValueType.UInt32 => Pack(elements, static v => (uint)v._bits),
            GgufValueType.Int32 => Pack(elements, static v => (int)(long)v._bits),
            GgufValueType.UInt64 => Pack(elements, static v => v._bits),
            GgufValueType.Int64 => Pack(elements, static v => (long)v._bits),
            GgufValueType.Float32 => Pack(elements, static v => BitConverter.UInt32BitsToSingle((uint)v._bits)),
            GgufValueType.Float64 => Pack(elements, static v => BitConverter.UInt64BitsToDouble(v._bits)),
            GgufValueType.Bool => Pack(elements, static v => v._bits != 0),
            GgufValueType.String => Pack(elements, static v => (string)v._ref!),
            _ => Pack(elements, static v => v.WithKey(null)),
        };
        return FromStorage(elementType, storage, null);
    }

    private static T[] Pack<T>(IReadOnlyList<GgufValue> elements, Func<GgufValue, T> get)
    {
        var a = new T[elements.Count];
        for (int i = 0; i < a.Length; i++) a[i] = get(elements[i]);
        return a;
    }

    /// <summary>An array of <see cref="GgufValueType.UInt8"/> (copied).</summary>
    public static GgufValue UInt8Array(ReadOnlySpan<byte> values) => FromStorage(GgufValueType.UInt8, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.Int8"/> (copied).</summary>
    public static GgufValue Int8Array(ReadOnlySpan<sbyte> values) => FromStorage(GgufValueType.Int8, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.UInt16"/> (copied).</summary>
    public static GgufValue UInt16Array(ReadOnlySpan<ushort> values) => FromStorage(GgufValueType.UInt16, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.Int16"/> (copied).</summary>
    public static GgufValue Int16Array(ReadOnlySpan<short> values) => FromStorage(GgufValueType.Int16, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.UInt32"/> (copied).</summary>
    public static GgufValue UInt32Array(ReadOnlySpan<uint> values) => FromStorage(GgufValueType.UInt32, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.Int32"/> (copied).</summary>
    public static GgufValue Int32Array(ReadOnlySpan<int> values) => FromStorage(GgufValueType.Int32, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.UInt64"/> (copied).</summary>
    public static GgufValue UInt64Array(ReadOnlySpan<ulong> values) => FromStorage(GgufValueType.UInt64, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.Int64"/> (copied).</summary>
    public static GgufValue Int64Array(ReadOnlySpan<long> values) => FromStorage(GgufValueType.Int64, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.Float32"/> (copied).</summary>
    public static GgufValue Float32Array(ReadOnlySpan<float> values) => FromStorage(GgufValueType.Float32, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.Float64"/> (copied).</summary>
    public static GgufValue Float64Array(ReadOnlySpan<double> values) => FromStorage(GgufValueType.Float64, values.ToArray(), null);
    /// <summary>An array of <see cref="GgufValueType.Bool"/> (copied).</summary>
    public static GgufValue BoolArray(ReadOnlySpan<bool> values) => FromStorage(GgufValueType.Bool, values.ToArray(), null);

    /// <summary>An array of <see cref="GgufValueType.String"/> (copied); null entries are rejected.</summary>
    public static GgufValue StringArray(IEnumerable<string> values)
    {
        ArgumentNullException.ThrowIfNull(values);
        string[] a = values.ToArray();
        for (int i = 0; i < a.Length; i++)
            if (a[i] is null) throw new ArgumentException($"string array element {i} is null", nameof(values));
        return FromStorage(GgufValueType.String, a, null);
    }

    /// <summary>Wraps an already-typed array without copying (the reader hands over arrays it owns).</summary>
    internal static GgufValue FromStorage(GgufValueType elementType, Array storage, string? key)
        => new(GgufValueType.Array, elementType, 0, storage, key);

    /// <summary>Scalar from raw bits as read from a file (the reader has already sign-extended signed integers).</summary>
    internal static GgufValue FromBits(GgufValueType type, ulong bits, string? key) => new(type, default, bits, null, key);

    /// <summary>String as read from a file.</summary>
    internal static GgufValue FromString(string value, string? key) => new(GgufValueType.String, default, 0, value, key);

    /// <summary>The typed storage of an array (for the writer).</summary>
    internal Array ArrayStorage => (Array)_ref!;

    /// <summary>Raw bits of a fixed-size scalar (for the writer).</summary>
    internal ulong RawBits => _bits;

    // ---- accessors ----

    /// <summary>The string; throws unless the value is a <see cref="GgufValueType.String"/>.</summary>
    public string AsString() => Type == GgufValueType.String ? (string)_ref! : throw WrongType("a string");

    /// <summary>The boolean; throws unless the value is a <see cref="GgufValueType.Bool"/>.</summary>
    public bool AsBool() => Type == GgufValueType.Bool ? _bits != 0 : throw WrongType("a bool");

    /// <summary>The value as a signed 64-bit integer, widening from any integer type; throws for
    /// non-integers and for a UInt64 above <see cref="long.MaxValue"/>.</summary>
    public long AsInt64()
    {
        if (!GgufValueTypes.IsInteger(Type)) throw WrongType("an integer");
        if (Type == GgufValueType.UInt64 && _bits > long.MaxValue) throw DoesNotFit("Int64");
        return (long)_bits;
    }

    /// <summary>The value as an unsigned 64-bit integer, from any integer type holding a non-negative value.</summary>
    public ulong AsUInt64()
    {
        if (!GgufValueTypes.IsInteger(Type)) throw WrongType("an integer");
        if (GgufValueTypes.IsSignedInteger(Type) && (long)_bits < 0) throw DoesNotFit("UInt64");
        return _bits;
    }

    /// <summary>The value as a UInt32, from any integer type whose value fits (writers disagree on
    /// which integer type hyperparameters use, so any exact representation is accepted).</summary>
    public uint AsUInt32()
    {
        if (!GgufValueTypes.IsInteger(Type)) throw WrongType("an integer");
        bool fits = GgufValueTypes.IsSignedInteger(Type) ? (long)_bits is >= 0 and <= uint.MaxValue : _bits <= uint.MaxValue;
        return fits ? (uint)_bits : throw DoesNotFit("UInt32");
    }

    /// <summary>The value as an Int32, from any integer type whose value fits.</summary>
    public int AsInt32()
    {
        if (!GgufValueTypes.IsInteger(Type)) throw WrongType("an integer");
        bool fits = GgufValueTypes.IsSignedInteger(Type) ? (long)_bits is >= int.MinValue and <= int.MaxValue : _bits <= int.MaxValue;
        return fits ? (int)(long)_bits : throw DoesNotFit("Int32");
    }

    /// <summary>The value as a float, from Float32 (exact) or Float64 (rounded).</summary>
    public float AsFloat32() => Type switch
    {
        GgufValueType.Float32 => BitConverter.UInt32BitsToSingle((uint)_bits),
        GgufValueType.Float64 => (float)BitConverter.UInt64BitsToDouble(_bits),
        _ => throw WrongType("a float"),
    };

    /// <summary>The value as a double, from Float32 or Float64.</summary>
    public double AsFloat64() => Type switch
    {
        GgufValueType.Float32 => BitConverter.UInt32BitsToSingle((uint)_bits),
        GgufValueType.Float64 => BitConverter.UInt64BitsToDouble(_bits),
        _ => throw WrongType("a float"),
    };

    /// <summary>The elements of an array as values (scalar elements are materialized on access;
    /// prefer the typed accessors for large arrays).</summary>
    public IReadOnlyList<GgufValue> AsArray()
        => Type == GgufValueType.Array ? new ElementList(this) : throw WrongType("an array");

    /// <summary>The elements of a string array, without copying.</summary>
    public IReadOnlyList<string> AsStringArray() => System.Array.AsReadOnly(TypedArray<string>(GgufValueType.String, "an array of String"));

    /// <summary>The elements of a Float32 array, without copying.</summary>
    public IReadOnlyList<float> AsFloat32Array() => System.Array.AsReadOnly(TypedArray<float>(GgufValueType.Float32, "an array of Float32"));

    /// <summary>The elements of an integer array as Int32: an Int32 array is returned without copying;
    /// other integer element types are converted (each element must fit).</summary>
    public IReadOnlyList<int> AsInt32Array()
    {
        if (Type != GgufValueType.Array) throw WrongType("an array of Int32");
        if (_elementType == GgufValueType.Int32) return System.Array.AsReadOnly((int[])_ref!);
        if (!GgufValueTypes.IsInteger(_elementType)) throw WrongType("an array of Int32");
        var source = (Array)_ref!;
        var result = new int[source.Length];
        for (int i = 0; i < result.Length; i++)
        {
            long v = _elementType switch
            {
                GgufValueType.UInt8 => ((byte[])source)[i],
                GgufValueType.Int8 => ((sbyte[])source)[i],
                GgufValueType.UInt16 => ((ushort[])source)[i],
                GgufValueType.Int16 => ((short[])source)[i],
                GgufValueType.UInt32 => ((uint[])source)[i],
                GgufValueType.Int64 => ((long[])source)[i],
                _ => ((ulong[])source)[i] > long.MaxValue ? long.MaxValue : (long)((ulong[])source)[i],
            };
            if (v is < int.MinValue or > int.MaxValue)
                throw new GgufMetadataRangeException(Key is null ? null : $"{Key}[{i}]", $"metadata '{KeyForMessage}' element {i} = {v} ({_elementType}) does not fit in Int32");
            result[i] = (int)v;
        }
        return result;
    }

    /// <summary>The elements of a scalar array as a span, without copying; <typeparamref name="T"/> must be
    /// the element type's exact .NET counterpart (byte, sbyte, ushort, short, uint, int, ulong, long, float,
    /// double or bool).</summary>
    public ReadOnlySpan<T> AsSpan<T>() where T : unmanaged
    {
        if (Type != GgufValueType.Array) throw WrongType($"an array of {typeof(T).Name}");
        return _ref is T[] typed ? typed : throw WrongType($"an array of {typeof(T).Name}");
    }

    private T[] TypedArray<T>(GgufValueType element, string expected)
        => Type == GgufValueType.Array && _elementType == element ? (T[])_ref! : throw WrongType(expected);

    private string KeyForMessage => Key ?? "(unnamed value)";

    private string TypeDescription => Type == GgufValueType.Array ? $"an array of {_elementType}" : Type.ToString();

    private GgufMetadataTypeException WrongType(string expected)
        => new(Key, $"metadata '{KeyForMessage}' is {TypeDescription}, not {expected}");

    private GgufMetadataRangeException DoesNotFit(string target)
        => new(Key, $"metadata '{KeyForMessage}' = {ScalarText()} ({Type}) does not fit in {target}");

    // ---- equality and display ----

    /// <summary>Structural equality of type and content (the <see cref="Key"/> label is ignored; floats
    /// compare by bits, so NaN equals the same NaN).</summary>
    public bool Equals(GgufValue? other)
    {
        if (other is null) return false;
        if (ReferenceEquals(this, other)) return true;
        if (Type != other.Type) return false;
        switch (Type)
        {
            case GgufValueType.String: return (string)_ref! == (string)other._ref!;
            case GgufValueType.Array:
                if (_elementType != other._elementType) return false;
                var a = (Array)_ref!;
                var b = (Array)other._ref!;
                if (a.Length != b.Length) return false;
                return _elementType switch
                {
                    GgufValueType.String => ((string[])a).AsSpan().SequenceEqual((string[])b),
                    GgufValueType.Array => ((GgufValue[])a).AsSpan().SequenceEqual((GgufValue[])b),
                    // Every other storage is an array of unmanaged values: compare bytes (bit equality).
                    _ => RawBytes(a).SequenceEqual(RawBytes(b)),
                };
            default: return _bits == other._bits;
        }
    }

    internal static ReadOnlySpan<byte> RawBytes(Array a) => a switch
    {
        byte[] x => x,
        sbyte[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        ushort[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        short[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        uint[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        int[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        ulong[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        long[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        float[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        double[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        bool[] x => MemoryMarshal.AsBytes(x.AsSpan()),
        _ => throw new InvalidOperationException($"{a.GetType()} is not an unmanaged array"),
    };

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as GgufValue);

    /// <inheritdoc/>
    public override int GetHashCode() => Type switch
    {
        GgufValueType.String => HashCode.Combine(Type, (string)_ref!),
        GgufValueType.Array => HashCode.Combine(Type, _elementType, ((Array)_ref!).Length),
        _ => HashCode.Combine(Type, _bits),
    };

    /// <summary>Readable form for listings: scalars as their value, strings quoted, arrays as
    /// <c>[Float32 × 32000: 0, -1000, …]</c> with the first few elements.</summary>
    public override string ToString()
    {
        if (Type == GgufValueType.String) return Quote((string)_ref!);
        if (Type != GgufValueType.Array) return ScalarText();
        const int shown = 8;
        var sb = new StringBuilder();
        sb.Append('[').Append(_elementType).Append(" × ").Append(Count);
        var items = AsArray();
        for (int i = 0; i < Math.Min(shown, items.Count); i++) sb.Append(i == 0 ? ": " : ", ").Append(items[i]);
        if (items.Count > shown) sb.Append(", …");
        return sb.Append(']').ToString();
    }

    private static string Quote(string s)
    {
        const int max = 80;
        string shown = s.Length > max ? s[..max] + "…" : s;
        return "\"" + shown.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n").Replace("\r", "\\r").Replace("\t", "\\t") + "\"";
    }

    private string ScalarText() => Type switch
    {
        GgufValueType.Float32 => BitConverter.UInt32BitsToSingle((uint)_bits).ToString("R", CultureInfo.InvariantCulture),
        GgufValueType.Float64 => BitConverter.UInt64BitsToDouble(_bits).ToString("R", CultureInfo.InvariantCulture),
        GgufValueType.Bool => _bits != 0 ? "true" : "false",
        _ when GgufValueTypes.IsSignedInteger(Type) => ((long)_bits).ToString(CultureInfo.InvariantCulture),
        _ when GgufValueTypes.IsInteger(Type) => _bits.ToString(CultureInfo.InvariantCulture),
        _ => Type.ToString(),
    };

    /// <summary>Read-only view of an array's elements that materializes scalar values on access.</summary>
    private sealed class ElementList(GgufValue array) : IReadOnlyList<GgufValue>
    {
        private readonly Array _storage = (Array)array._ref!;

        public int Count => _storage.Length;

        public GgufValue this[int index]
        {
            get
            {
                if ((uint)index >= (uint)_storage.Length) throw new ArgumentOutOfRangeException(nameof(index), index, $"array has {_storage.Length} elements");
                string? key = array.Key is null ? null : $"{array.Key}[{index}]";
                var t = array._elementType;
                return _storage switch
                {
                    byte[] x => FromBits(t, x[index], key),
                    sbyte[] x => FromBits(t, (ulong)(long)x[index], key),
                    ushort[] x => FromBits(t, x[index], key),
                    short[] x => FromBits(t, (ulong)(long)x[index], key),
                    uint[] x => FromBits(t, x[index], key),
                    int[] x => FromBits(t, (ulong)(long)x[index], key),
                    ulong[] x => FromBits(t, x[index], key),
                    long[] x => FromBits(t, (ulong)x[index], key),
                    float[] x => FromBits(t, BitConverter.SingleToUInt32Bits(x[index]), key),
                    double[] x => FromBits(t, BitConverter.DoubleToUInt64Bits(x[index]), key),
                    bool[] x => FromBits(t, x[index] ? 1UL : 0UL, key),
                    string[] x => FromString(x[index], key),
                    GgufValue[] x => key is null ? x[index] : x[index].WithKey(key),
                    _ => throw new InvalidOperationException("unexpected array storage"),
                };
            }
        }

        public IEnumerator<GgufValue> GetEnumerator()
        {
            for (int i = 0; i < _storage.Length; i++) yield return this[i];
        }

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }
}

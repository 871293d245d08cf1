namespace PluginEngine.Core.Gguf;

/// <summary>Type tags of GGUF metadata values, numbered exactly as the file stores them.</summary>
public enum GgufValueType : uint
{
    /// <summary>8-bit unsigned integer.</summary>
    UInt8 = 0,
    /// <summary>8-bit signed integer.</summary>
    Int8 = 1,
    /// <summary>16-bit unsigned integer.</summary>
    UInt16 = 2,
    /// <summary>16-bit signed integer.</summary>
    Int16 = 3,
    /// <summary>32-bit unsigned integer.</summary>
    UInt32 = 4,
    /// <summary>32-bit signed integer.</summary>
    Int32 = 5,
    /// <summary>IEEE 754 single-precision float.</summary>
    Float32 = 6,
    /// <summary>One byte, 0 (false) or 1 (true).</summary>
    Bool = 7,
    /// <summary>UTF-8 string: uint64 byte length, then the bytes (no terminator).</summary>
    String = 8,
    /// <summary>Array: uint32 element type, uint64 count, then the elements (arrays may nest).</summary>
    Array = 9,
    /// <summary>64-bit unsigned integer.</summary>
    UInt64 = 10,
    /// <summary>64-bit signed integer.</summary>
    Int64 = 11,
    /// <summary>IEEE 754 double-precision float.</summary>
    Float64 = 12,
}

/// <summary>Facts about <see cref="GgufValueType"/> values that the reader and writer share.</summary>
public static class GgufValueTypes
{
    /// <summary>True for tags the format defines.</summary>
    public static bool IsKnown(uint raw) => raw <= (uint)GgufValueType.Float64;

    /// <summary>True for the eight integer types.</summary>
    public static bool IsInteger(GgufValueType t) => t is GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.UInt16
        or GgufValueType.Int16 or GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.UInt64 or GgufValueType.Int64;

    /// <summary>True for the signed integer types.</summary>
    public static bool IsSignedInteger(GgufValueType t) => t is GgufValueType.Int8 or GgufValueType.Int16 or GgufValueType.Int32 or GgufValueType.Int64;

    /// <summary>Encoded size of a fixed-size value, or 0 for strings and arrays (variable size).</summary>
    public static int FixedSize(GgufValueType t) => t switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => 8,
        _ => 0,
    };

    /// <summary>Fewest bytes one encoded value of type <paramref name="t"/> can take: used to bound
    /// element counts by the bytes left in the file before allocating anything.</summary>
    public static int MinEncodedSize(GgufValueType t) => t switch
    {
        GgufValueType.String => 8,              // length prefix, possibly empty
        GgufValueType.Array => 4 + 8,           // element type + count, possibly empty
        _ => FixedSize(t),
    };
}

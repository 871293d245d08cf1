namespace PluginEngine.Core.Gguf;

/// <summary>
/// A metadata value is not of the kind a reader asked for (a string where a count belongs, an integer where a float
/// belongs). Thrown by the typed accessors of <see cref="GgufValue"/>; the message names the key and both types. It is
/// bad input, not a bug: commands report it as a user error.
/// </summary>
public sealed class GgufMetadataTypeException(string? key, string message) : InvalidCastException(message)
{
    /// <summary>The metadata key (<c>key[i]</c> for an array element), or null for a value built in code.</summary>
    public string? Key { get; } = key;
}

/// <summary>
/// An integer metadata value does not fit the type a reader asked for (a UInt64 of 2⁶³+5 read as Int64, a negative
/// count read as UInt32). The message names the key, the value and the target type; commands report it as a user error.
/// </summary>
public sealed class GgufMetadataRangeException(string? key, string message) : OverflowException(message)
{
    /// <summary>The metadata key (<c>key[i]</c> for an array element), or null for a value built in code.</summary>
    public string? Key { get; } = key;
}

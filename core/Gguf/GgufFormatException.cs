namespace PluginEngine.Core.Gguf;

/// <summary>
/// A GGUF file is malformed: thrown by <see cref="GgufReader"/> with the file, the byte offset of the
/// offending field, the field's name (e.g. <c>tensor_infos[3].dims[1]</c>,
/// <c>metadata['general.alignment']</c>, <c>header.tensor_count</c>) and what is wrong with it.
/// </summary>
public sealed class GgufFormatException : Exception
{
    /// <summary>Creates the exception; the message states all four facts.</summary>
    public GgufFormatException(string path, long offset, string field, string problem)
        : base($"{path}: invalid GGUF at byte {offset} ({field}): {problem}")
    {
        Path = path;
        Offset = offset;
        Field = field;
        Problem = problem;
    }

    /// <summary>The file (or the display name given for a stream).</summary>
    public string Path { get; }

    /// <summary>Byte offset, from the start of the file, of the field that is wrong.</summary>
    public long Offset { get; }

    /// <summary>Which field is wrong, as a path into the format's structure.</summary>
    public string Field { get; }

    /// <summary>What is wrong, without the location.</summary>
    public string Problem { get; }
}

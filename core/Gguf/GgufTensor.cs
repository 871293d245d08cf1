using PluginEngine.Abstractions;

namespace PluginEngine.Core.Gguf;

/// <summary>One tensor listed in a GGUF file: its description and where its data lies.</summary>
public sealed class GgufTensor
{
    internal GgufTensor(int index, TensorInfo info, long relativeOffset, long fileOffset)
    {
        Index = index;
        Info = info;
        RelativeOffset = relativeOffset;
        FileOffset = fileOffset;
    }

    /// <summary>Position of this tensor in the file's tensor-info list.</summary>
    public int Index { get; }

    /// <summary>Tensor name as stored in the file.</summary>
    public string Name => Info.Name;

    /// <summary>Type and shape.</summary>
    public TensorInfo Info { get; }

    /// <summary>Offset of the data within the data section, as stored in the file.</summary>
    public long RelativeOffset { get; }

    /// <summary>Absolute byte offset of the data in the file (data section start + relative offset).</summary>
    public long FileOffset { get; }

    /// <summary>Bytes of the tensor's data (without padding).</summary>
    public long ByteSize => Info.ByteSize;

    /// <summary>First file offset after the tensor's data.</summary>
    public long FileEnd => FileOffset + Info.ByteSize;

    /// <inheritdoc/>
    public override string ToString() => $"{Info} @ {FileOffset} (+{ByteSize} B)";
}

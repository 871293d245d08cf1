using PluginEngine.Abstractions;

namespace PluginEngine.Core.Loading;

/// <summary>One tensor of a model file: what it is and where its bytes start in the file.</summary>
public sealed record FileTensor(TensorInfo Info, long FileOffset)
{
    /// <summary>Offset one past the tensor's last byte.</summary>
    public long FileEnd => FileOffset + Info.ByteSize;
}

/// <summary>The fixed byte layout of a model file, as the loader needs it (independent of the file format's reader).</summary>
/// <param name="Path">The file.</param>
/// <param name="FileLength">Its length in bytes.</param>
/// <param name="Tensors">Tensors in any order; they must not overlap and must lie inside the file.</param>
public sealed record ModelFileLayout(string Path, long FileLength, IReadOnlyList<FileTensor> Tensors)
{
    /// <summary>Tensors in file-offset order (computed once).</summary>
    public IReadOnlyList<FileTensor> TensorsByOffset { get; } = Tensors.OrderBy(t => t.FileOffset).ToArray();

    /// <summary>Start of the next tensor after <paramref name="index"/> (in offset order), or the file length.</summary>
    public long NextStart(int index) => index + 1 < TensorsByOffset.Count ? TensorsByOffset[index + 1].FileOffset : FileLength;
}

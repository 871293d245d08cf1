using Microsoft.Win32.SafeHandles;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Memory;

/// <summary>Fills writable mappings (hugetlb, anonymous, heap) with a file's bytes.</summary>
public static class MappingFill
{
    /// <summary>Largest write window opened at once, so a multi-GB copy can be cancelled between chunks.</summary>
    public const int MaxChunkBytes = 64 * 1024 * 1024;

    /// <summary>
    /// Copies <paramref name="length"/> bytes at <paramref name="fileOffset"/> of <paramref name="file"/> to
    /// <paramref name="mappingOffset"/> of <paramref name="target"/>, reading straight into the mapping's pages
    /// through write windows of at most <see cref="MaxChunkBytes"/>. Refuses targets that cannot be written
    /// (<see cref="MappingWriteRefusedException"/>) and throws <see cref="EndOfStreamException"/> naming the file
    /// and offset when the file is shorter than the range. Cancellation is checked before each chunk.
    /// </summary>
    public static void CopyFromFile(
        IModelMapping target,
        SafeFileHandle file,
        long fileOffset,
        long mappingOffset,
        long length,
        CancellationToken cancellationToken = default) =>
        CopyFromFile(target, file, fileOffset, mappingOffset, length, MaxChunkBytes, cancellationToken);

    /// <summary>Same as the public overload with a chosen chunk size (tests use small ones to cross chunk boundaries).</summary>
    internal static void CopyFromFile(
        IModelMapping target,
        SafeFileHandle file,
        long fileOffset,
        long mappingOffset,
        long length,
        int chunkBytes,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentNullException.ThrowIfNull(file);
        ArgumentOutOfRangeException.ThrowIfNegative(fileOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(mappingOffset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkBytes);

        if (mappingOffset > target.Length - length)
        {
            throw new MappingWriteRefusedException(
                $"Copy of {length} bytes from '{target.SourcePath}' to mapping offset {mappingOffset} was refused: " +
                $"[{mappingOffset}, {mappingOffset + length}) lies outside the {target.Length}-byte {target.Backing} mapping. Nothing was written.");
        }

        // Fail before writing anything when the file is already known to be too short.
        long fileLength = RandomAccess.GetLength(file);
        if (fileOffset > fileLength - length)
        {
            throw new EndOfStreamException(
                $"File '{target.SourcePath}' is {fileLength} bytes long, but {length} bytes were to be read at byte offset {fileOffset} " +
                $"(up to {fileOffset + length}); the file is truncated or the tensor offsets are wrong.");
        }

        long copied = 0;
        while (copied < length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int chunk = (int)Math.Min(chunkBytes, length - copied);
            using var window = target.OpenWrite(mappingOffset + copied, chunk);
            Span<byte> destination = window.Bytes;
            int filled = 0;
            while (filled < chunk)
            {
                int read = RandomAccess.Read(file, destination[filled..], fileOffset + copied + filled);
                if (read == 0)
                {
                    // The file shrank after the length check: say where it ended.
                    throw new EndOfStreamException(
                        $"File '{target.SourcePath}' ended at byte offset {fileOffset + copied + filled} while reading {length} bytes " +
                        $"from byte offset {fileOffset}; the file is truncated.");
                }

                filled += read;
            }

            copied += chunk;
        }
    }
}

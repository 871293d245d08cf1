using Microsoft.Win32.SafeHandles;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Quantization;

namespace PluginEngine.Core.Models;

/// <summary>
/// The <c>--check-tensors</c> load option (llama.cpp has the same switch): decodes every weight of the file and rejects
/// the model at the first NaN or infinity, naming the tensor, the element and its byte range. Off by default because it
/// reads the whole file once (a 7B Q4_0 model: ~4 GB); without it, non-finite weights still cannot pass silently,
/// because every step checks its logits (<see cref="Inference.NonFiniteLogitsException"/>).
/// </summary>
public static class TensorValueCheck
{
    /// <summary>Blocks decoded per read: keeps the buffers small (a few hundred KiB) whatever the tensor size.</summary>
    private const int BlocksPerChunk = 4096;

    /// <summary>Checks every tensor of <paramref name="file"/> whose type has a decoder; throws <see cref="ModelFormatException"/> at the first non-finite value.</summary>
    public static void CheckFinite(GgufFile file, CancellationToken cancellation = default)
    {
        using SafeFileHandle handle = File.OpenHandle(file.Path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan);
        byte[] raw = [];
        float[] values = [];
        foreach (var tensor in file.Tensors)
        {
            cancellation.ThrowIfCancellationRequested();
            var type = tensor.Info.Type;
            if (!Dequantizer.IsSupported(type)) continue; // types without a decoder are refused by the load's type check instead
            var layout = GgmlTypes.Get(type);
            long blocks = tensor.Info.ElementCount / layout.BlockSize;
            for (long first = 0; first < blocks; first += BlocksPerChunk)
            {
                int count = (int)Math.Min(BlocksPerChunk, blocks - first);
                int bytes = count * layout.BytesPerBlock, elements = count * layout.BlockSize;
                if (raw.Length < bytes) raw = new byte[bytes];
                if (values.Length < elements) values = new float[elements];
                long offset = tensor.FileOffset + first * layout.BytesPerBlock;
                int read = RandomAccess.Read(handle, raw.AsSpan(0, bytes), offset);
                if (read != bytes) throw new ModelFormatException(file.Path, tensor.Name, $"data ends early at byte {offset + read}");
                Dequantizer.Dequantize(type, raw.AsSpan(0, bytes), values.AsSpan(0, elements));
                int bad = IndexOfNonFinite(values.AsSpan(0, elements));
                if (bad >= 0)
                {
                    long element = first * layout.BlockSize + bad;
                    long blockStart = offset + (long)(bad / layout.BlockSize) * layout.BytesPerBlock;
                    throw new ModelFormatException(file.Path, tensor.Name,
                        $"element {element} is {values[bad]} (block at bytes {blockStart}..{blockStart + layout.BytesPerBlock - 1}); the weights must be finite");
                }
            }
        }
    }

    private static int IndexOfNonFinite(ReadOnlySpan<float> values)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i])) return i;
        return -1;
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Backends.Cuda;
using Xunit;

namespace PluginEngine.Tests.Cuda;

/// <summary>
/// The device row layout's host half, without a GPU: the layout conversion, which tensors are eligible, and when a
/// buffer's tracked tensors are packed and unpacked (with a converter that rewrites host memory as the device would).
/// The device half (pack_rows and the kernels that read the layout) is covered by the conformance kit on a GPU.
/// </summary>
public sealed class PackedRowsTests
{
    [Theory]
    [InlineData(GgmlType.Q4_0)]
    [InlineData(GgmlType.Q8_0)]
    public void Conversion_puts_quants_first_and_scales_after_and_round_trips(GgmlType type)
    {
        int quantBytes = PackedRows.QuantBytes(type), blocks = 8, blockBytes = quantBytes + 2, rowBytes = blocks * blockBytes;
        var gguf = new byte[2 * rowBytes];
        new Random(5).NextBytes(gguf);
        var packed = new byte[gguf.Length];
        PackedRows.Convert(gguf, packed, blocks, quantBytes, toDevice: true);
        for (int row = 0; row < 2; row++)
            for (int b = 0; b < blocks; b++)
            {
                int block = row * rowBytes + b * blockBytes;
                Assert.Equal(gguf.AsSpan(block, 2), packed.AsSpan(row * rowBytes + blocks * quantBytes + 2 * b, 2));
                Assert.Equal(gguf.AsSpan(block + 2, quantBytes), packed.AsSpan(row * rowBytes + b * quantBytes, quantBytes));
            }
        var back = new byte[gguf.Length];
        PackedRows.Convert(packed, back, blocks, quantBytes, toDevice: false);
        Assert.Equal(gguf, back);
        Assert.Throws<ArgumentException>(() => PackedRows.Convert(gguf.AsSpan(1), packed.AsSpan(1), blocks, quantBytes, true));
    }

    [Fact]
    public void Only_Q4_0_and_Q8_0_rows_of_a_multiple_of_256_at_16_byte_aligned_offsets_are_packed()
    {
        Assert.True(PackedRows.CanPack(new TensorInfo("w", GgmlType.Q4_0, [4096, 2]), 64));
        Assert.True(PackedRows.CanPack(new TensorInfo("w", GgmlType.Q8_0, [768, 2]), 0));
        Assert.False(PackedRows.CanPack(new TensorInfo("w", GgmlType.Q4_0, [544, 2]), 64)); // rows not 16-byte multiples
        Assert.False(PackedRows.CanPack(new TensorInfo("w", GgmlType.Q4_0, [4096, 2]), 40)); // start not 16-byte aligned
        Assert.False(PackedRows.CanPack(new TensorInfo("w", GgmlType.Q4_K, [4096, 2]), 64));
        Assert.False(PackedRows.CanPack(new TensorInfo("w", GgmlType.F16, [4096, 2]), 64));
    }

    /// <summary>Host memory standing in for a device buffer: converts regions in place like pack_rows, counting calls.</summary>
    private sealed class HostConverter(byte[] memory) : PackedRegions.IConverter
    {
        public int Packs, Unpacks;

        public void ConvertInPlace(PackedRegions.Region region, bool toDevice)
        {
            var span = memory.AsSpan((int)region.Start, (int)region.Bytes);
            var converted = new byte[span.Length];
            PackedRows.Convert(span, converted, region.BlocksPerRow, region.QuantBytes, toDevice);
            converted.CopyTo(span);
            if (toDevice) Packs++; else Unpacks++;
        }
    }

    private static (byte[] Memory, HostConverter Converter, PackedRegions Regions, TensorInfo Info, byte[] Data) Setup(long offset = 64)
    {
        var info = new TensorInfo("w", GgmlType.Q4_0, [512, 6]);
        var memory = new byte[offset + info.ByteSize + 64];
        var converter = new HostConverter(memory);
        var data = new byte[info.ByteSize];
        new Random(7).NextBytes(data);
        return (memory, converter, new PackedRegions(converter), info, data);
    }

    private static void Write(byte[] memory, PackedRegions regions, long at, ReadOnlySpan<byte> data)
    {
        regions.BeforeWrite(at, data.Length);
        data.CopyTo(memory.AsSpan((int)at));
        regions.AfterWrite(at, data.Length);
    }

    [Fact]
    public void A_tensor_is_packed_once_when_its_last_in_order_chunk_arrives()
    {
        var (memory, converter, regions, info, data) = Setup();
        regions.Register(info, 64);
        for (int done = 0; done < data.Length; done += 500)
        {
            Assert.False(regions.IsPackedAt(64, info.RowBytes));
            Write(memory, regions, 64 + done, data.AsSpan(done, Math.Min(500, data.Length - done)));
        }
        Assert.Equal(1, converter.Packs);
        Assert.True(regions.IsPackedAt(64, info.RowBytes));
        Assert.True(regions.IsPackedAt(64 + 3 * info.RowBytes, info.RowBytes)); // a view starting on a row
        Assert.Throws<InvalidOperationException>(() => regions.IsPackedAt(64 + 18, info.RowBytes));
        Assert.False(regions.IsPackedAt(64 + info.ByteSize, info.RowBytes)); // past the tensor
        var expected = new byte[data.Length];
        PackedRows.Convert(data, expected, 16, 16, toDevice: true);
        Assert.Equal(expected, memory.AsSpan(64, data.Length).ToArray());
        Assert.Single(regions.PackedOverlapping(64 + 100, 10));
        Assert.Empty(regions.PackedOverlapping(0, 64));
    }

    [Fact]
    public void Writes_that_skip_ahead_do_not_pack_until_the_gap_is_filled()
    {
        var (memory, converter, regions, info, data) = Setup();
        regions.Register(info, 64);
        int half = data.Length / 2;
        Write(memory, regions, 64 + half, data.AsSpan(half));
        Assert.Equal(0, converter.Packs);
        Write(memory, regions, 64, data.AsSpan(0, half));
        Assert.Equal(0, converter.Packs); // the prefix counts only writes that continue it
        Write(memory, regions, 64 + half, data.AsSpan(half));
        Assert.Equal(1, converter.Packs);
    }

    [Fact]
    public void A_write_over_a_packed_tensor_unpacks_it_first_and_packs_it_again()
    {
        var (memory, converter, regions, info, data) = Setup();
        regions.Register(info, 64);
        Write(memory, regions, 64, data);
        var patch = new byte[100];
        new Random(9).NextBytes(patch);
        Write(memory, regions, 64 + 250, patch);
        Assert.Equal(1, converter.Unpacks);
        Assert.Equal(2, converter.Packs);
        patch.CopyTo(data, 250);
        converter.ConvertInPlace(regions.PackedOverlapping(64, 1)[0], toDevice: false);
        Assert.Equal(data, memory.AsSpan(64, data.Length).ToArray()); // the patch landed on GGUF bytes
    }

    [Fact]
    public void Registering_an_overlapping_tensor_forgets_the_old_one_and_ineligible_ones_are_not_tracked()
    {
        var (memory, _, regions, info, data) = Setup();
        regions.Register(info, 64);
        Write(memory, regions, 64, data);
        Assert.True(regions.Tracks(64, 1));
        regions.Register(new TensorInfo("f", GgmlType.F16, [512, 2]), 64 + 32);
        Assert.False(regions.Tracks(0, memory.Length));
        Assert.False(regions.IsPackedAt(64, info.RowBytes));
        regions.Register(info, 72); // not 16-byte aligned
        Assert.False(regions.Tracks(0, memory.Length));
    }
}

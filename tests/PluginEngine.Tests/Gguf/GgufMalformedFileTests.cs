using PluginEngine.Core.Gguf;
using Xunit;
using static PluginEngine.Tests.Gguf.GgufTestFiles;

namespace PluginEngine.Tests.Gguf;

/// <summary>A corpus of malformed files, each made from a valid one; every case must fail with a
/// <see cref="GgufFormatException"/> whose Field and Offset point at the bad field.</summary>
public class GgufMalformedFileTests
{
    private static readonly byte[] Valid = Sample().ToBytes();
    private static readonly GgufFile ValidFile = Parse(Valid);

    private static GgufFormatException Fails(byte[] bytes, string field, long offset)
    {
        var ex = Assert.Throws<GgufFormatException>(() => Parse(bytes, "bad.gguf"));
        Assert.Equal(field, ex.Field);
        Assert.Equal(offset, ex.Offset);
        Assert.Equal("bad.gguf", ex.Path);
        Assert.Contains("bad.gguf", ex.Message);
        Assert.Contains(field, ex.Message);
        Assert.Contains($"byte {offset}", ex.Message);
        return ex;
    }

    [Fact]
    public void The_unpatched_sample_is_valid()
    {
        Assert.Equal(8, ValidFile.Metadata.Count);
        Assert.Equal(4, ValidFile.Tensors.Count);
    }

    [Fact]
    public void Truncation_at_every_offset_of_header_metadata_and_tensor_infos_is_reported()
    {
        int metadataStart = GgufReader.HeaderSize;
        int infosStart = StringAt(Valid, "tok_embd.weight");
        int infosEnd = TensorInfoAt(Valid, "t.b").Offset + 8;
        long lastTensorEnd = ValidFile.Tensors.Max(t => t.FileEnd);
        for (int cut = 0; cut < lastTensorEnd; cut++)
        {
            var ex = Assert.Throws<GgufFormatException>(() => Parse(Valid[..cut]));
            Assert.True(ex.Offset <= cut, $"cut at {cut}: error offset {ex.Offset} ({ex.Field}) lies after the cut");
            // A count that can no longer fit in what is left is caught at the count, before the section is read.
            bool countField = ex.Field is "header.tensor_count" or "header.kv_count";
            if (cut < metadataStart)
                Assert.StartsWith("header.", ex.Field);
            else if (cut < infosStart)
                Assert.True(countField || (ex.Field.StartsWith("metadata") && ex.Offset >= metadataStart), $"cut at {cut} (metadata): {ex.Field} at {ex.Offset}");
            else if (cut < infosEnd)
                Assert.True(countField || (ex.Field.StartsWith("tensor_infos[") && ex.Offset >= infosStart), $"cut at {cut} (tensor infos): {ex.Field} at {ex.Offset}");
            else
                Assert.True(ex.Field.StartsWith("tensor_infos[") && ex.Field.EndsWith("].offset") && ex.Problem.Contains("past the end"), $"cut at {cut} (data): {ex.Field}: {ex.Problem}");
        }
    }

    [Fact]
    public void Truncation_inside_tensor_data_names_the_tensor_whose_data_is_cut()
    {
        var last = ValidFile.Tensors[^1];
        var (_, _, _, _, offsetAt) = TensorInfoAt(Valid, last.Name);
        var ex = Fails(Valid[..(int)(last.FileEnd - 1)], $"tensor_infos[{last.Index}].offset", offsetAt);
        Assert.Contains("past the end of the file", ex.Problem);
    }

    [Fact]
    public void A_stream_shorter_than_its_declared_length_is_reported()
    {
        int cut = StringAt(Valid, "test.tokens") + 3;
        var ex = Assert.Throws<GgufFormatException>(() => GgufReader.Read(new MemoryStream(Valid[..cut]), "short.gguf", Valid.Length));
        Assert.Contains("stream ended", ex.Problem);
        Assert.True(ex.Offset <= cut);
    }

    [Fact]
    public void Bad_magic() => Fails(Valid.With(b => b[1] = (byte)'X'), "header.magic", 0);

    [Theory]
    [InlineData(1u, "version 1")]
    [InlineData(99u, "version 99")]
    [InlineData(0x03000000u, "big-endian")]
    public void Unsupported_versions(uint version, string mentioned)
    {
        var ex = Fails(Valid.With(b => b.PutUInt32(4, version)), "header.version", 4);
        Assert.Contains(mentioned, ex.Message);
    }

    [Fact]
    public void Absurd_tensor_count() => Fails(Valid.With(b => b.PutUInt64(8, 1UL << 62)), "header.tensor_count", 8);

    [Fact]
    public void Absurd_kv_count() => Fails(Valid.With(b => b.PutUInt64(16, 1UL << 62)), "header.kv_count", 16);

    [Fact]
    public void Key_length_past_end_of_file()
        => Fails(Valid.With(b => b.PutUInt64(24, (ulong)Valid.Length)), "metadata[0].key", 24);

    [Fact]
    public void String_value_length_past_end_of_file()
    {
        int valueAt = AfterString(Valid, "general.architecture") + 4;
        Assert.Equal(StringAt(Valid, "llama"), valueAt);
        var ex = Fails(Valid.With(b => b.PutUInt64(valueAt, 1UL << 40)), "metadata['general.architecture']", valueAt);
        Assert.Contains("past the end", ex.Problem);
    }

    [Fact]
    public void String_array_element_length_past_end_of_file()
    {
        int elementAt = StringAt(Valid, "ünï");
        Fails(Valid.With(b => b.PutUInt64(elementAt, ulong.MaxValue)), "metadata['test.tokens'][3]", elementAt);
    }

    [Theory]
    [InlineData("test.scores")]
    [InlineData("test.tokens")]
    [InlineData("test.nested")]
    public void Array_length_past_end_of_file(string key)
    {
        int countAt = AfterString(Valid, key) + 4 + 4;
        var ex = Fails(Valid.With(b => b.PutUInt64(countAt, (ulong)Valid.Length)), $"metadata['{key}'].count", countAt);
        Assert.Contains("remain", ex.Problem);
    }

    [Fact]
    public void Huge_array_length_does_not_allocate()
        => Fails(Valid.With(b => b.PutUInt64(AfterString(Valid, "test.scores") + 8, ulong.MaxValue)), "metadata['test.scores'].count", AfterString(Valid, "test.scores") + 8);

    [Fact]
    public void Unknown_value_type()
    {
        int typeAt = AfterString(Valid, "test.u32");
        var ex = Fails(Valid.With(b => b.PutUInt32(typeAt, 13)), "metadata['test.u32'].type", typeAt);
        Assert.Contains("unknown value type 13", ex.Problem);
    }

    [Fact]
    public void Unknown_array_element_type()
    {
        int elementTypeAt = AfterString(Valid, "test.scores") + 4;
        Fails(Valid.With(b => b.PutUInt32(elementTypeAt, 0xFFFF_FFFF)), "metadata['test.scores'].element_type", elementTypeAt);
    }

    [Fact]
    public void Unknown_element_type_inside_a_nested_array()
    {
        int innerTypeAt = AfterString(Valid, "test.nested") + 4 + 4 + 8; // outer type, element type, count
        Fails(Valid.With(b => b.PutUInt32(innerTypeAt, 42)), "metadata['test.nested'][0].element_type", innerTypeAt);
    }

    [Fact]
    public void Bool_other_than_zero_or_one()
    {
        int valueAt = AfterString(Valid, "test.flag") + 4;
        Fails(Valid.With(b => b[valueAt] = 2), "metadata['test.flag']", valueAt);
    }

    [Fact]
    public void Arrays_nested_too_deep()
    {
        var value = GgufValue.Int32Array([1]);
        for (int i = 1; i <= GgufReader.MaxArrayDepth; i++) value = GgufValue.Array(GgufValueType.Array, [value]);
        var bytes = new GgufWriter().AddMetadata("deep", value).ToBytes();
        // Levels: 'deep' is depth 1; the array at depth MaxArrayDepth may not hold arrays.
        long at = AfterString(bytes, "deep") + 4 + (GgufReader.MaxArrayDepth - 1) * 12L;
        string field = "metadata['deep']" + string.Concat(Enumerable.Repeat("[0]", GgufReader.MaxArrayDepth - 1)) + ".element_type";
        var ex = Fails(bytes, field, at);
        Assert.Contains("nested", ex.Problem);

        var shallower = GgufValue.Array(GgufValueType.Array, [GgufValue.Int32Array([1])]);
        for (int i = 2; i < GgufReader.MaxArrayDepth; i++) shallower = GgufValue.Array(GgufValueType.Array, [shallower]);
        Assert.Equal(shallower, Parse(new GgufWriter().AddMetadata("deep", shallower).ToBytes()).Metadata["deep"]);
    }

    [Theory]
    [InlineData(4u)]
    [InlineData(31u)]
    [InlineData(99u)]
    public void Unknown_tensor_type(uint type)
    {
        var at = TensorInfoAt(Valid, "blk.0.attn_q.weight");
        var ex = Fails(Valid.With(b => b.PutUInt32(at.Type, type)), "tensor_infos[1].type", at.Type);
        Assert.Contains($"unknown tensor type {type}", ex.Problem);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(5u)]
    [InlineData(uint.MaxValue)]
    public void Bad_dimension_count(uint nDims)
    {
        var at = TensorInfoAt(Valid, "tok_embd.weight");
        var ex = Fails(Valid.With(b => b.PutUInt32(at.NDims, nDims)), "tensor_infos[0].n_dims", at.NDims);
        Assert.Contains("tok_embd.weight", ex.Problem);
    }

    [Fact]
    public void Zero_dimension()
    {
        var at = TensorInfoAt(Valid, "blk.0.attn_q.weight");
        Fails(Valid.With(b => b.PutUInt64(at.Dims + 8, 0)), "tensor_infos[1].dims[1]", at.Dims + 8);
    }

    [Fact]
    public void Dimensions_whose_product_overflows()
    {
        var at = TensorInfoAt(Valid, "t.b");
        var bytes = Valid.With(b =>
        {
            b.PutUInt64(at.Dims, 1UL << 32);
            b.PutUInt64(at.Dims + 8, 1UL << 20);
            b.PutUInt64(at.Dims + 16, 1UL << 20);
        });
        var ex = Fails(bytes, "tensor_infos[3].dims[2]", at.Dims + 16);
        Assert.Contains("overflow", ex.Problem);
    }

    [Fact]
    public void Dimension_above_int64_max()
    {
        var at = TensorInfoAt(Valid, "t.a");
        Fails(Valid.With(b => b.PutUInt64(at.Dims, ulong.MaxValue)), "tensor_infos[2].dims[0]", at.Dims);
    }

    [Fact]
    public void Byte_size_that_overflows_although_the_element_count_does_not()
    {
        var at = TensorInfoAt(Valid, "tok_embd.weight"); // F32: 4 bytes per element
        var bytes = Valid.With(b => { b.PutUInt64(at.Dims, 1UL << 31); b.PutUInt64(at.Dims + 8, 1UL << 31); });
        var ex = Fails(bytes, "tensor_infos[0].dims", at.Dims);
        Assert.Contains("overflow", ex.Problem);

        // One row alone whose byte size overflows (2^62 F32 elements = 2^64 bytes).
        var oneRow = Valid.With(b => { b.PutUInt64(at.Dims, 1UL << 62); b.PutUInt64(at.Dims + 8, 1); });
        Assert.Contains("overflow", Fails(oneRow, "tensor_infos[0].dims", at.Dims).Problem);
    }

    [Fact]
    public void Row_length_not_a_multiple_of_the_block_size()
    {
        var at = TensorInfoAt(Valid, "blk.0.attn_q.weight"); // Q8_0: blocks of 32
        var ex = Fails(Valid.With(b => b.PutUInt64(at.Dims, 48)), "tensor_infos[1].dims[0]", at.Dims);
        Assert.Contains("block size 32", ex.Problem);
    }

    [Fact]
    public void Misaligned_tensor_offset()
    {
        var at = TensorInfoAt(Valid, "blk.0.attn_q.weight");
        var ex = Fails(Valid.With(b => b.PutUInt64(at.Offset, Valid.GetUInt64(at.Offset) + 4)), "tensor_infos[1].offset", at.Offset);
        Assert.Contains("alignment 32", ex.Problem);
    }

    [Fact]
    public void Tensor_past_end_of_file()
    {
        var at = TensorInfoAt(Valid, "t.a");
        ulong beyond = (ulong)(Valid.Length - ValidFile.DataSectionOffset) / 32 * 32; // aligned, starts inside the file, ends outside
        var ex = Fails(Valid.With(b => b.PutUInt64(at.Offset, beyond)), "tensor_infos[2].offset", at.Offset);
        Assert.Contains("past the end of the file", ex.Problem);
        Fails(Valid.With(b => b.PutUInt64(at.Offset, 1UL << 63)), "tensor_infos[2].offset", at.Offset);
    }

    [Fact]
    public void Overlapping_tensors()
    {
        var first = TensorInfoAt(Valid, "blk.0.attn_q.weight");
        var second = TensorInfoAt(Valid, "t.a");
        var ex = Fails(Valid.With(b => b.PutUInt64(second.Offset, Valid.GetUInt64(first.Offset))), "tensor_infos[2].offset", second.Offset);
        Assert.Contains("overlaps tensor 'blk.0.attn_q.weight'", ex.Problem);
    }

    [Fact]
    public void Duplicate_tensor_names()
    {
        var second = TensorInfoAt(Valid, "t.b");
        var ex = Fails(Valid.With(b => b[second.Name + 8 + 2] = (byte)'a'), "tensor_infos[3].name", second.Name);
        Assert.Contains("duplicate tensor name 't.a'", ex.Problem);
    }

    [Fact]
    public void Duplicate_metadata_keys()
    {
        int second = StringAt(Valid, "k.b");
        var ex = Fails(Valid.With(b => b[second + 8 + 2] = (byte)'a'), "metadata[7].key", second);
        Assert.Contains("duplicate metadata key 'k.a'", ex.Problem);
    }

    [Fact]
    public void Empty_tensor_name()
    {
        var at = TensorInfoAt(Valid, "t.a");
        var bytes = Valid.With(b => b.PutUInt64(at.Name, 0));
        // The name now reads as empty (its old bytes become the next fields); the name check fires first.
        Fails(bytes, "tensor_infos[2].name", at.Name);
    }

    [Theory]
    [InlineData(48u)]
    [InlineData(0u)]
    [InlineData(3u)]
    public void Alignment_not_a_power_of_two(uint alignment)
    {
        var bytes = Sample(new GgufWriterOptions { Alignment = 64 }).ToBytes();
        int valueAt = AfterString(bytes, "general.alignment") + 4;
        var ex = Fails(bytes.With(b => b.PutUInt32(valueAt, alignment)), "metadata['general.alignment']", valueAt);
        Assert.Contains("power of two", ex.Problem);
    }

    [Fact]
    public void Alignment_of_the_wrong_type()
    {
        var bytes = Sample(new GgufWriterOptions { Alignment = 64 }).ToBytes();
        int typeAt = AfterString(bytes, "general.alignment");
        var ex = Fails(bytes.With(b => b.PutUInt32(typeAt, (uint)GgufValueType.Int32)), "metadata['general.alignment']", typeAt);
        Assert.Contains("UInt32", ex.Problem);
    }

    [Fact]
    public void Random_corruption_never_escapes_as_another_exception_type()
    {
        // Flip single bytes across the whole header region: the result either parses or fails with a format error.
        var rng = new Random(1234);
        int end = (int)ValidFile.DataSectionOffset;
        for (int i = 0; i < 3000; i++)
        {
            int at = rng.Next(end);
            byte value = (byte)rng.Next(256);
            var bytes = Valid.With(b => b[at] = value);
            try { Parse(bytes); }
            catch (GgufFormatException ex) { Assert.InRange(ex.Offset, 0, bytes.Length); }
        }
    }

    [Fact]
    public void Random_64_bit_overwrites_never_escape_as_another_exception_type()
    {
        // Counts, lengths, dims and offsets are 64-bit: overwrite 8 bytes at a time with edge-case values.
        ulong[] interesting = [0, 1, 31, 32, 1UL << 31, 1UL << 32, 1UL << 62, 1UL << 63, long.MaxValue, ulong.MaxValue];
        var rng = new Random(99);
        int end = (int)ValidFile.DataSectionOffset - 8;
        for (int i = 0; i < 3000; i++)
        {
            int at = rng.Next(end);
            ulong value = rng.Next(3) == 0 ? (ulong)rng.NextInt64() : interesting[rng.Next(interesting.Length)];
            var bytes = Valid.With(b => b.PutUInt64(at, value));
            try { Parse(bytes); }
            catch (GgufFormatException ex) { Assert.InRange(ex.Offset, 0, bytes.Length); }
        }
    }

    [Fact]
    public void Reading_a_file_from_disk_reports_its_path()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gguf-bad-{Guid.NewGuid():N}.gguf");
        try
        {
            File.WriteAllBytes(path, Valid.With(b => b.PutUInt32(4, 1)));
            var ex = Assert.Throws<GgufFormatException>(() => GgufReader.Read(path));
            Assert.Equal(path, ex.Path);
            Assert.StartsWith(path, ex.Message);
        }
        finally { File.Delete(path); }
    }
}

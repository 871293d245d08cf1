using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using Xunit;
using static PluginEngine.Tests.Gguf.GgufTestFiles;

namespace PluginEngine.Tests.Gguf;

/// <summary>What the writer writes, the reader reads back unchanged.</summary>
public class GgufRoundTripTests
{
    /// <summary>One value of every type, including extremes, empty arrays and nested arrays.</summary>
    private static List<(string Key, GgufValue Value)> EveryKindOfValue() =>
    [
        ("u8", GgufValue.UInt8(byte.MaxValue)),
        ("i8", GgufValue.Int8(sbyte.MinValue)),
        ("u16", GgufValue.UInt16(ushort.MaxValue)),
        ("i16", GgufValue.Int16(short.MinValue)),
        ("u32", GgufValue.UInt32(uint.MaxValue)),
        ("i32", GgufValue.Int32(-123456789)),
        ("u64", GgufValue.UInt64(ulong.MaxValue)),
        ("i64", GgufValue.Int64(long.MinValue)),
        ("f32", GgufValue.Float32(-0.1f)),
        ("f32.nan", GgufValue.Float32(BitConverter.UInt32BitsToSingle(0x7FC0_1234))),
        ("f64", GgufValue.Float64(Math.PI)),
        ("bool.true", GgufValue.Bool(true)),
        ("bool.false", GgufValue.Bool(false)),
        ("str", GgufValue.String("héllo \"wörld\"\n✓ 🦙")),
        ("str.empty", GgufValue.String("")),
        ("str.long", GgufValue.String(new string('x', 200_000))), // longer than the reader's buffer
        ("arr.u8", GgufValue.UInt8Array([0, 1, 255])),
        ("arr.i8", GgufValue.Int8Array([-128, 0, 127])),
        ("arr.u16", GgufValue.UInt16Array([0, 65535])),
        ("arr.i16", GgufValue.Int16Array([-32768, 32767])),
        ("arr.u32", GgufValue.UInt32Array([0, uint.MaxValue])),
        ("arr.i32", GgufValue.Int32Array([int.MinValue, -1, int.MaxValue])),
        ("arr.u64", GgufValue.UInt64Array([ulong.MaxValue, 0])),
        ("arr.i64", GgufValue.Int64Array([long.MinValue, long.MaxValue])),
        ("arr.f32", GgufValue.Float32Array([1.5f, float.NegativeInfinity, float.Epsilon])),
        ("arr.f64", GgufValue.Float64Array([double.MaxValue, -0.0])),
        ("arr.bool", GgufValue.BoolArray([true, false, true])),
        ("arr.str", GgufValue.StringArray(["a", "", "ü", "<0x0A>"])),
        ("arr.big", GgufValue.Float32Array(Enumerable.Range(0, 100_000).Select(i => i * 0.5f).ToArray())), // larger than the buffer
        ("arr.from.values", GgufValue.Array(GgufValueType.UInt16, [GgufValue.UInt16(3), GgufValue.UInt16(4)])),
        ("arr.nested", GgufValue.Array(GgufValueType.Array,
        [
            GgufValue.Int32Array([1, 2, 3]),
            GgufValue.StringArray(["x", "y"]),
            GgufValue.Array(GgufValueType.Array, [GgufValue.Float64Array([2.5]), GgufValue.BoolArray([])]),
            GgufValue.UInt8Array([]),
        ])),
        .. Enum.GetValues<GgufValueType>().Select(t => ($"arr.empty.{t}", GgufValue.Array(t, []))),
    ];

    [Theory]
    [InlineData(2u)]
    [InlineData(3u)]
    public void Every_value_type_round_trips_in_order(uint version)
    {
        var values = EveryKindOfValue();
        var writer = new GgufWriter(new GgufWriterOptions { Version = version });
        foreach (var (key, value) in values) writer.AddMetadata(key, value);

        var file = Parse(writer.ToBytes());

        Assert.Equal(version, file.Version);
        Assert.Equal(values.Select(v => v.Key), file.Metadata.Keys);
        foreach (var (key, value) in values)
        {
            var read = file.Metadata[key];
            Assert.Equal(value.Type, read.Type);
            if (value.IsArray) Assert.Equal(value.ElementType, read.ElementType);
            Assert.Equal(value, read);
            Assert.Equal(key, read.Key);
        }
        Assert.Empty(file.Tensors);
    }

    [Fact]
    public void Values_read_back_through_typed_accessors()
    {
        var file = Parse(Sample().ToBytes());
        Assert.Equal("llama", file.GetString("general.architecture"));
        Assert.Equal(7u, file.GetUInt32("test.u32"));
        Assert.True(file.GetBool("test.flag"));
        Assert.Equal(["<unk>", "a", "", "ünï"], file.GetStringArray("test.tokens"));
        Assert.Equal([0f, -1.5f, 2.25f], file.GetFloat32Array("test.scores"));
        var nested = file.Metadata["test.nested"].AsArray();
        Assert.Equal([1, 2], nested[0].AsInt32Array());
        Assert.Equal(["x"], nested[1].AsStringArray());
        Assert.Equal("test.nested[1]", nested[1].Key);
    }

    [Theory]
    [InlineData(2u, 32u)]
    [InlineData(3u, 32u)]
    [InlineData(3u, 1u)]
    [InlineData(3u, 8u)]
    [InlineData(2u, 64u)]
    [InlineData(3u, 4096u)]
    public void Tensors_round_trip_with_offsets_aligned_and_data_intact(uint version, uint alignment)
    {
        var tensors = new (string Name, GgmlType Type, long[] Dims)[]
        {
            ("token_embd.weight", GgmlType.F32, [5, 3]),
            ("blk.0.attn_q.weight", GgmlType.Q4_0, [64, 3]),
            ("blk.0.ffn_down.weight", GgmlType.Q4_K, [256, 1, 2]),
            ("blk.0.attn_norm.weight", GgmlType.F16, [7]),
            ("output.weight", GgmlType.Q6_K, [512, 2, 1, 2]),
            ("rope_freqs", GgmlType.BF16, [3]),
        };
        var writer = new GgufWriter(new GgufWriterOptions { Version = version, Alignment = alignment });
        writer.AddMetadata("general.architecture", GgufValue.String("llama"));
        var data = new Dictionary<string, byte[]>();
        int seed = 10;
        foreach (var (name, type, dims) in tensors)
        {
            long size = new TensorInfo(name, type, dims).ByteSize;
            data[name] = Data((int)size, seed++);
            writer.AddTensor(name, type, dims, data[name]);
        }
        byte[] bytes = writer.ToBytes();

        var file = Parse(bytes);

        Assert.Equal(version, file.Version);
        Assert.Equal(alignment, file.Alignment);
        Assert.Equal(bytes.Length, file.FileLength);
        Assert.Equal(0, file.DataSectionOffset % alignment);
        // general.alignment is written exactly when it differs from the default.
        Assert.Equal(alignment != 32, file.Metadata.ContainsKey("general.alignment"));
        if (alignment != 32) Assert.Equal(alignment, file.GetUInt32("general.alignment"));
        Assert.Equal(tensors.Select(t => t.Name), file.Tensors.Select(t => t.Name));
        long previousEnd = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            var (name, type, dims) = tensors[i];
            var t = file.GetTensor(name);
            Assert.Same(t, file.Tensors[i]);
            Assert.Equal(i, t.Index);
            Assert.Equal(type, t.Info.Type);
            Assert.Equal(dims, t.Info.Dims);
            Assert.Equal(0, t.RelativeOffset % alignment);
            Assert.Equal(file.DataSectionOffset + t.RelativeOffset, t.FileOffset);
            Assert.Equal(TensorPadding.AlignUp(previousEnd, alignment), t.RelativeOffset); // packed as tightly as alignment allows
            Assert.Equal(data[name].Length, t.ByteSize);
            Assert.Equal(data[name], bytes.AsSpan((int)t.FileOffset, (int)t.ByteSize).ToArray());
            previousEnd = t.RelativeOffset + t.ByteSize;
        }
        Assert.Equal(TensorPadding.AlignUp(file.Tensors[^1].FileEnd, alignment), bytes.Length);
        Assert.Null(file.FindTensor("missing"));
        var ex = Assert.Throws<KeyNotFoundException>(() => file.GetTensor("missing"));
        Assert.Contains("'missing'", ex.Message);
    }

    [Fact]
    public void Padding_byte_fills_every_alignment_gap()
    {
        var options = new GgufWriterOptions { PaddingByte = 0xAB };
        byte[] bytes = Sample(options).ToBytes();
        var file = Parse(bytes);

        int infosEnd = TensorInfoAt(bytes, "t.b").Offset + 8;
        Assert.True(file.DataSectionOffset > infosEnd, "the sample should need padding before its data section");
        Assert.All(bytes[infosEnd..(int)file.DataSectionOffset], b => Assert.Equal(0xAB, b));
        int gapBytes = 0;
        for (int i = 0; i < file.Tensors.Count; i++)
        {
            long gapEnd = i + 1 < file.Tensors.Count ? file.Tensors[i + 1].FileOffset : bytes.Length;
            var gap = bytes[(int)file.Tensors[i].FileEnd..(int)gapEnd];
            Assert.All(gap, b => Assert.Equal(0xAB, b));
            gapBytes += gap.Length;
        }
        Assert.True(gapBytes > 0, "the sample should have gaps between tensors");

        // The same file with zero padding differs only in those gap bytes.
        byte[] zeroPadded = Sample().ToBytes();
        Assert.Equal(bytes.Length, zeroPadded.Length);
        int differing = bytes.Zip(zeroPadded).Count(p => p.First != p.Second);
        Assert.Equal(gapBytes + (int)file.DataSectionOffset - infosEnd, differing);
    }

    [Fact]
    public void Without_end_padding_the_file_ends_at_the_last_tensor()
    {
        byte[] bytes = Sample(new GgufWriterOptions { PadAfterLastTensor = false }).ToBytes();
        var file = Parse(bytes);
        Assert.Equal(bytes.Length, file.Tensors[^1].FileEnd);
        Assert.NotEqual(0, bytes.Length % 32);
    }

    [Fact]
    public void File_on_disk_round_trips()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gguf-rt-{Guid.NewGuid():N}.gguf");
        try
        {
            Sample().WriteTo(path);
            var file = GgufReader.Read(path);
            Assert.Equal(path, file.Path);
            Assert.Equal(new FileInfo(path).Length, file.FileLength);
            Assert.Equal(Parse(File.ReadAllBytes(path)).Metadata, file.Metadata);
            Assert.Equal(4, file.Tensors.Count);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Large_vocabulary_round_trips_and_is_stored_as_typed_arrays()
    {
        const int n = 150_000;
        var tokens = Enumerable.Range(0, n).Select(i => $"tok{i}").ToArray();
        var scores = Enumerable.Range(0, n).Select(i => -i / 7f).ToArray();
        var types = Enumerable.Range(0, n).Select(i => i % 6).ToArray();
        var writer = new GgufWriter()
            .AddMetadata("tokenizer.ggml.tokens", GgufValue.StringArray(tokens))
            .AddMetadata("tokenizer.ggml.scores", GgufValue.Float32Array(scores))
            .AddMetadata("tokenizer.ggml.token_type", GgufValue.Int32Array(types));

        var file = Parse(writer.ToBytes());

        Assert.Equal(tokens, file.GetStringArray("tokenizer.ggml.tokens"));
        Assert.Equal(scores, file.GetFloat32Array("tokenizer.ggml.scores"));
        Assert.Equal(types, file.GetInt32Array("tokenizer.ggml.token_type"));
        // Typed views share one backing array (no per-element objects, no copy per call).
        var s = file.Metadata["tokenizer.ggml.scores"];
        Assert.True(Unsafe.AreSame(in s.AsSpan<float>()[0], in s.AsSpan<float>()[0]));
        Assert.Equal(n, s.Count);
    }

    [Fact]
    public void Reading_stops_before_the_tensor_data()
    {
        const int tensorBytes = 4 << 20;
        byte[] bytes = new GgufWriter()
            .AddMetadata("general.architecture", GgufValue.String("llama"))
            .AddTensor("big", GgmlType.F32, [tensorBytes / 4], new byte[tensorBytes])
            .ToBytes();
        var counting = new CountingStream(new MemoryStream(bytes));

        var file = GgufReader.Read(counting, "big.gguf", bytes.Length);

        Assert.Equal(tensorBytes, file.GetTensor("big").ByteSize);
        // One read-ahead buffer (64 KiB) past the header at most: the 4 MiB of data is never touched.
        Assert.InRange(counting.BytesRead, file.DataSectionOffset - 31, 64 * 1024);
    }

    [Fact]
    public void Short_reads_from_a_non_seekable_stream_give_the_same_result()
    {
        var writer = Sample();
        foreach (var (key, value) in EveryKindOfValue()) writer.AddMetadata(key, value);
        byte[] bytes = writer.ToBytes();

        var viaMemory = Parse(bytes);
        var viaShortReads = GgufReader.Read(new CountingStream(new MemoryStream(bytes)), "pipe", bytes.Length);

        Assert.Equal(viaMemory.Metadata, viaShortReads.Metadata);
        Assert.Equal(viaMemory.Tensors.Select(t => (t.Name, t.FileOffset, t.ByteSize)), viaShortReads.Tensors.Select(t => (t.Name, t.FileOffset, t.ByteSize)));
    }

    /// <summary>Counts the bytes read through it (and refuses to seek, as a pipe would).</summary>
    private sealed class CountingStream(Stream inner) : Stream
    {
        public long BytesRead { get; private set; }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = inner.Read(buffer, offset, Math.Min(count, 1000)); // short reads, as pipes and sockets give
            BytesRead += n;
            return n;
        }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    [Fact]
    public void Writer_output_matches_the_format_byte_for_byte()
    {
        // Hand-encoded per the GGUF spec: header, one KV (uint32), one F32 [2] tensor, padding to 32.
        byte[] bytes = new GgufWriter(new GgufWriterOptions { Version = 3 })
            .AddMetadata("a.b", GgufValue.UInt32(0x01020304))
            .AddTensor("w", GgmlType.F32, [2], new byte[] { 1, 2, 3, 4, 5, 6, 7, 8 })
            .ToBytes();

        var expected = new List<byte>();
        void U32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, v); expected.AddRange(b); }
        void U64(ulong v) { var b = new byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, v); expected.AddRange(b); }
        expected.AddRange("GGUF"u8.ToArray());
        U32(3); U64(1); U64(1);                          // version, tensor count, kv count
        U64(3); expected.AddRange("a.b"u8.ToArray());    // key
        U32(4); U32(0x01020304);                         // type UInt32, value
        U64(1); expected.Add((byte)'w');                 // tensor name
        U32(1); U64(2); U32(0); U64(0);                  // n_dims, dims, type F32, offset
        while (expected.Count % 32 != 0) expected.Add(0); // data section alignment
        expected.AddRange([1, 2, 3, 4, 5, 6, 7, 8]);
        while (expected.Count % 32 != 0) expected.Add(0); // end padding
        Assert.Equal(expected.ToArray(), bytes);
    }
}

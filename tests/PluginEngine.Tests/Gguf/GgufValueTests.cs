using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using Xunit;
using static PluginEngine.Tests.Gguf.GgufTestFiles;

namespace PluginEngine.Tests.Gguf;

/// <summary>Typed access to metadata, its errors, and the writer's argument checks.</summary>
public class GgufValueTests
{
    private static readonly GgufFile File = Parse(Sample().ToBytes());

    [Fact]
    public void Wrong_type_access_names_the_key_and_the_actual_type()
    {
        var ex = Assert.Throws<GgufMetadataTypeException>(() => File.GetUInt32("general.architecture"));
        Assert.Contains("'general.architecture'", ex.Message);
        Assert.Contains("String", ex.Message);

        ex = Assert.Throws<GgufMetadataTypeException>(() => File.GetStringArray("test.scores"));
        Assert.Contains("'test.scores'", ex.Message);
        Assert.Contains("array of Float32", ex.Message);

        ex = Assert.Throws<GgufMetadataTypeException>(() => File.Metadata["test.tokens"].AsArray()[1].AsFloat32());
        Assert.Contains("'test.tokens[1]'", ex.Message);

        Assert.Throws<GgufMetadataTypeException>(() => File.GetString("test.u32"));
        Assert.Throws<GgufMetadataTypeException>(() => File.GetBool("test.u32"));
        Assert.Throws<GgufMetadataTypeException>(() => File.GetFloat32("test.u32"));
        Assert.Throws<GgufMetadataTypeException>(() => File.Metadata["test.u32"].AsArray());
        Assert.Throws<GgufMetadataTypeException>(() => File.Metadata["test.u32"].ElementType);
        Assert.Throws<GgufMetadataTypeException>(() => File.Metadata["test.scores"].AsSpan<int>());
    }

    [Fact]
    public void Missing_keys_are_named()
    {
        var ex = Assert.Throws<KeyNotFoundException>(() => File.GetString("llama.context_length"));
        Assert.Contains("'llama.context_length'", ex.Message);
        Assert.Contains("test.gguf", ex.Message);
        Assert.False(File.TryGet("llama.context_length", out _));
        Assert.True(File.TryGet("test.u32", out var v));
        Assert.Equal(7u, v.AsUInt32());
    }

    [Fact]
    public void Optional_getters_return_the_default_only_when_absent()
    {
        Assert.Equal(4096u, File.GetUInt32OrDefault("llama.context_length", 4096));
        Assert.Equal(7u, File.GetUInt32OrDefault("test.u32", 4096));
        Assert.Equal(1e-5f, File.GetFloat32OrDefault("llama.rms_eps", 1e-5f));
        Assert.Null(File.GetStringOrDefault("general.name"));
        Assert.Equal("llama", File.GetStringOrDefault("general.architecture", "x"));
        Assert.False(File.GetBoolOrDefault("missing", false));
        // Present but of the wrong type is still an error, not the default.
        Assert.Throws<GgufMetadataTypeException>(() => File.GetUInt32OrDefault("general.architecture", 1));
    }

    [Fact]
    public void Integer_accessors_widen_from_every_integer_type()
    {
        Assert.Equal(200L, GgufValue.UInt8(200).AsInt64());
        Assert.Equal(-5L, GgufValue.Int8(-5).AsInt64());
        Assert.Equal(60000L, GgufValue.UInt16(60000).AsInt64());
        Assert.Equal(-30000L, GgufValue.Int16(-30000).AsInt64());
        Assert.Equal(4_000_000_000L, GgufValue.UInt32(4_000_000_000).AsInt64());
        Assert.Equal(-7L, GgufValue.Int32(-7).AsInt64());
        Assert.Equal(1L << 40, GgufValue.UInt64(1UL << 40).AsInt64());
        Assert.Equal(long.MinValue, GgufValue.Int64(long.MinValue).AsInt64());
        Assert.Equal(4096u, GgufValue.Int32(4096).AsUInt32());
        Assert.Equal(4096u, GgufValue.UInt64(4096).AsUInt32());
        Assert.Equal(-1, GgufValue.Int64(-1).AsInt32());
        Assert.Equal(ulong.MaxValue, GgufValue.UInt64(ulong.MaxValue).AsUInt64());
        Assert.Equal(2.5f, GgufValue.Float64(2.5).AsFloat32());
        Assert.Equal(0.25, GgufValue.Float32(0.25f).AsFloat64());
        Assert.Throws<GgufMetadataTypeException>(() => GgufValue.Float32(1).AsInt64());
        Assert.Throws<GgufMetadataTypeException>(() => GgufValue.Bool(true).AsUInt32());
    }

    [Fact]
    public void Integers_that_do_not_fit_are_rejected_with_the_key()
    {
        var negative = Parse(new GgufWriter().AddMetadata("n.ctx", GgufValue.Int32(-1)).ToBytes()).Metadata["n.ctx"];
        var ex = Assert.Throws<GgufMetadataRangeException>(() => negative.AsUInt32());
        Assert.Contains("'n.ctx'", ex.Message);
        Assert.Contains("-1", ex.Message);
        Assert.Throws<GgufMetadataRangeException>(() => negative.AsUInt64());
        Assert.Throws<GgufMetadataRangeException>(() => GgufValue.UInt64(ulong.MaxValue).AsInt64());
        Assert.Throws<GgufMetadataRangeException>(() => GgufValue.UInt64(1UL << 32).AsUInt32());
        Assert.Throws<GgufMetadataRangeException>(() => GgufValue.Int64(1L << 31).AsInt32());
    }

    [Fact]
    public void Int32_array_accessor_converts_other_integer_arrays()
    {
        Assert.Equal([1, 2, 3], GgufValue.UInt32Array([1, 2, 3]).AsInt32Array());
        Assert.Equal([-1, 5], GgufValue.Int8Array([-1, 5]).AsInt32Array());
        Assert.Equal([7], GgufValue.UInt64Array([7]).AsInt32Array());
        var ex = Assert.Throws<GgufMetadataRangeException>(() => GgufValue.UInt32Array([1, uint.MaxValue]).AsInt32Array());
        Assert.Contains("element 1", ex.Message);
        Assert.Throws<GgufMetadataTypeException>(() => GgufValue.Float32Array([1]).AsInt32Array());
    }

    [Fact]
    public void Array_factory_requires_every_element_to_have_the_element_type()
    {
        var ex = Assert.Throws<ArgumentException>(() => GgufValue.Array(GgufValueType.Int32, [GgufValue.Int32(1), GgufValue.UInt32(2)]));
        Assert.Contains("element 1 is UInt32", ex.Message);
        Assert.Throws<ArgumentException>(() => GgufValue.StringArray(["a", null!]));
        Assert.Throws<ArgumentOutOfRangeException>(() => GgufValue.Array((GgufValueType)13, []));
    }

    [Fact]
    public void Array_factory_and_typed_factory_build_equal_values()
    {
        var fromValues = GgufValue.Array(GgufValueType.Float32, [GgufValue.Float32(1), GgufValue.Float32(-2)]);
        Assert.Equal(GgufValue.Float32Array([1, -2]), fromValues);
        Assert.NotEqual(GgufValue.Float32Array([1, -3]), fromValues);
        Assert.NotEqual(GgufValue.Int32Array([1, -2]), fromValues);
        Assert.Equal([1f, -2f], fromValues.AsArray().Select(v => v.AsFloat32()));
        Assert.NotEqual(GgufValue.UInt32(1), GgufValue.Int32(1));
    }

    [Fact]
    public void Typed_factories_copy_their_input()
    {
        var source = new[] { 1f, 2f };
        var value = GgufValue.Float32Array(source);
        source[0] = 99;
        Assert.Equal(1f, value.AsFloat32Array()[0]);
    }

    [Fact]
    public void Values_display_readably()
    {
        Assert.Equal("\"llama\"", File.Metadata["general.architecture"].ToString());
        Assert.Equal("7", File.Metadata["test.u32"].ToString());
        Assert.Equal("[Float32 × 3: 0, -1.5, 2.25]", File.Metadata["test.scores"].ToString());
        Assert.Equal("-1", GgufValue.Int8(-1).ToString());
        Assert.EndsWith(", …]", GgufValue.Int32Array(new int[100]).ToString());
    }

    [Fact]
    public void Writer_rejects_bad_arguments_with_clear_messages()
    {
        var w = new GgufWriter();
        var ex = Assert.Throws<ArgumentException>(() => w.AddTensor("w", GgmlType.Q8_0, [64, 2], new byte[10]));
        Assert.Contains("'w'", ex.Message);
        Assert.Contains("136", ex.Message); // 2 rows x 2 blocks x 34 bytes
        Assert.Throws<ArgumentException>(() => w.AddTensor("w", GgmlType.Q8_0, [48], new byte[34])); // not whole blocks
        Assert.Throws<ArgumentException>(() => w.AddTensor("w", GgmlType.F32, [1, 1, 1, 1, 1], new byte[4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => w.AddTensor("w", (GgmlType)4, [1], new byte[4]));

        w.AddTensor("w", GgmlType.F32, [1], new byte[4]);
        Assert.Contains("'w'", Assert.Throws<ArgumentException>(() => w.AddTensor("w", GgmlType.F32, [1], new byte[4])).Message);
        w.AddMetadata("k", GgufValue.Bool(true));
        Assert.Contains("'k'", Assert.Throws<ArgumentException>(() => w.AddMetadata("k", GgufValue.Bool(false))).Message);

        Assert.Throws<ArgumentException>(() => new GgufWriter(new GgufWriterOptions { Version = 1 }));
        Assert.Throws<ArgumentException>(() => new GgufWriter(new GgufWriterOptions { Alignment = 48 }));
        Assert.Throws<ArgumentException>(() => new GgufWriter(new GgufWriterOptions { Alignment = 0 }));
        Assert.Throws<ArgumentException>(() => new GgufWriter(new GgufWriterOptions { Alignment = 64 }).AddMetadata("general.alignment", GgufValue.UInt32(32)));
        Assert.Throws<ArgumentException>(() => new GgufWriter(new GgufWriterOptions { Alignment = 64 }).AddMetadata("general.alignment", GgufValue.UInt64(64)));
    }

    [Fact]
    public void Explicit_general_alignment_matching_the_options_is_written_once_in_place()
    {
        var bytes = new GgufWriter(new GgufWriterOptions { Alignment = 64 })
            .AddMetadata("general.alignment", GgufValue.UInt32(64))
            .AddMetadata("z", GgufValue.UInt8(0))
            .ToBytes();
        var file = Parse(bytes);
        Assert.Equal(["general.alignment", "z"], file.Metadata.Keys);
        Assert.Equal(64u, file.Alignment);

        // Alignment 32 written explicitly is kept, even though it is the default.
        var explicit32 = Parse(new GgufWriter().AddMetadata("general.alignment", GgufValue.UInt32(32)).ToBytes());
        Assert.Equal(32u, explicit32.GetUInt32("general.alignment"));
    }
}

using System.Buffers.Binary;
using System.Text;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;

namespace PluginEngine.Tests.Gguf;

/// <summary>Builds small GGUF images in memory and locates fields in them for byte patching.</summary>
internal static class GgufTestFiles
{
    /// <summary>Writes <paramref name="writer"/> to a byte array.</summary>
    public static byte[] ToBytes(this GgufWriter writer)
    {
        using var ms = new MemoryStream();
        writer.WriteTo(ms);
        return ms.ToArray();
    }

    /// <summary>Parses an in-memory image.</summary>
    public static GgufFile Parse(byte[] bytes, string name = "test.gguf") => GgufReader.Read(new MemoryStream(bytes, writable: false), name, bytes.Length);

    /// <summary>Deterministic pseudo-random bytes (distinct per seed, so misplaced data is detected).</summary>
    public static byte[] Data(int length, int seed)
    {
        var rng = new Random(seed);
        var b = new byte[length];
        rng.NextBytes(b);
        return b;
    }

    /// <summary>
    /// A valid file with metadata of several kinds and three tensors of different types; the malformed
    /// corpus is made by patching its bytes.
    /// </summary>
    public static GgufWriter Sample(GgufWriterOptions? options = null)
    {
        var w = new GgufWriter(options);
        w.AddMetadata("general.architecture", GgufValue.String("llama"));
        w.AddMetadata("test.u32", GgufValue.UInt32(7));
        w.AddMetadata("test.flag", GgufValue.Bool(true));
        w.AddMetadata("test.tokens", GgufValue.StringArray(["<unk>", "a", "", "ünï"]));
        w.AddMetadata("test.scores", GgufValue.Float32Array([0f, -1.5f, 2.25f]));
        w.AddMetadata("test.nested", GgufValue.Array(GgufValueType.Array,
            [GgufValue.Int32Array([1, 2]), GgufValue.StringArray(["x"])]));
        w.AddMetadata("k.a", GgufValue.UInt8(1));
        w.AddMetadata("k.b", GgufValue.UInt8(2));
        w.AddTensor("tok_embd.weight", GgmlType.F32, [8, 4], Data(8 * 4 * 4, 1));
        w.AddTensor("blk.0.attn_q.weight", GgmlType.Q8_0, [64, 2], Data(2 * 2 * 34, 2));
        w.AddTensor("t.a", GgmlType.F16, [3], Data(6, 3));
        w.AddTensor("t.b", GgmlType.F32, [1, 1, 1, 2], Data(8, 4));
        return w;
    }

    /// <summary>Offset of the length prefix of the GGUF string <paramref name="text"/> (the first
    /// occurrence of its length-prefixed encoding).</summary>
    public static int StringAt(byte[] file, string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var encoded = new byte[8 + utf8.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(encoded, (ulong)utf8.Length);
        utf8.CopyTo(encoded, 8);
        int at = file.AsSpan().IndexOf(encoded);
        if (at < 0) throw new InvalidOperationException($"string '{text}' not found in the test file");
        return at;
    }

    /// <summary>Offset just after the GGUF string <paramref name="text"/>.</summary>
    public static int AfterString(byte[] file, string text) => StringAt(file, text) + 8 + Encoding.UTF8.GetByteCount(text);

    /// <summary>Field offsets of a tensor info whose name is <paramref name="name"/>.</summary>
    public static (int Name, int NDims, int Dims, int Type, int Offset) TensorInfoAt(byte[] file, string name)
    {
        int nameAt = StringAt(file, name);
        int nDimsAt = nameAt + 8 + Encoding.UTF8.GetByteCount(name);
        int nDims = (int)BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan(nDimsAt));
        int dimsAt = nDimsAt + 4;
        int typeAt = dimsAt + 8 * nDims;
        return (nameAt, nDimsAt, dimsAt, typeAt, typeAt + 4);
    }

    public static byte[] With(this byte[] file, Action<byte[]> patch)
    {
        var copy = (byte[])file.Clone();
        patch(copy);
        return copy;
    }

    public static void PutUInt32(this byte[] file, int at, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(file.AsSpan(at), value);
    public static void PutUInt64(this byte[] file, int at, ulong value) => BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(at), value);
    public static ulong GetUInt64(this byte[] file, int at) => BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(at));
}

using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using Xunit;
using static PluginEngine.Tests.Gguf.GgufTestFiles;

namespace PluginEngine.Tests.Gguf;

/// <summary>
/// Cross-checks against ggml's own GGUF code (libggml-base from the LLamaSharp.Backend.Cpu package, the
/// independent implementation llama.cpp uses): files written here must parse identically there, and files
/// written there must parse identically here. Skipped where that library is not available.
/// </summary>
public unsafe class GgufGgmlInteropTests
{
    [StructLayout(LayoutKind.Sequential)]
    private struct GgufInitParams
    {
        public byte NoAlloc; // C bool
        public nint Context; // struct ggml_context ** (null: do not create one)
    }

    /// <summary>The subset of ggml's gguf.h these tests call, bound by function pointer.</summary>
    private sealed class Ggml
    {
        public readonly delegate* unmanaged<byte*, GgufInitParams, nint> InitFromFile;
        public readonly delegate* unmanaged<nint> InitEmpty;
        public readonly delegate* unmanaged<nint, void> Free;
        public readonly delegate* unmanaged<nint, uint> GetVersion;
        public readonly delegate* unmanaged<nint, nuint> GetAlignment;
        public readonly delegate* unmanaged<nint, nuint> GetDataOffset;
        public readonly delegate* unmanaged<nint, long> GetNKv;
        public readonly delegate* unmanaged<nint, long, byte*> GetKey;
        public readonly delegate* unmanaged<nint, long, int> GetKvType;
        public readonly delegate* unmanaged<nint, long, int> GetArrType;
        public readonly delegate* unmanaged<nint, long, nuint> GetArrN;
        public readonly delegate* unmanaged<nint, long, void*> GetArrData;
        public readonly delegate* unmanaged<nint, long, nuint, byte*> GetArrStr;
        public readonly delegate* unmanaged<nint, long, void*> GetValData;
        public readonly delegate* unmanaged<nint, long, byte*> GetValStr;
        public readonly delegate* unmanaged<nint, long> GetNTensors;
        public readonly delegate* unmanaged<nint, long, byte*> GetTensorName;
        public readonly delegate* unmanaged<nint, long, nuint> GetTensorOffset;
        public readonly delegate* unmanaged<nint, long, int> GetTensorType;
        public readonly delegate* unmanaged<nint, long, nuint> GetTensorSize;
        public readonly delegate* unmanaged<nint, byte*, uint, void> SetValU32;
        public readonly delegate* unmanaged<nint, byte*, sbyte, void> SetValI8;
        public readonly delegate* unmanaged<nint, byte*, long, void> SetValI64;
        public readonly delegate* unmanaged<nint, byte*, double, void> SetValF64;
        public readonly delegate* unmanaged<nint, byte*, float, void> SetValF32;
        public readonly delegate* unmanaged<nint, byte*, byte, void> SetValBool;
        public readonly delegate* unmanaged<nint, byte*, byte*, void> SetValStr;
        public readonly delegate* unmanaged<nint, byte*, int, void*, nuint, void> SetArrData;
        public readonly delegate* unmanaged<nint, byte*, byte**, nuint, void> SetArrStr;
        public readonly delegate* unmanaged<nint, byte*, byte, byte> WriteToFile;

        public Ggml(nint lib)
        {
            nint F(string name) => NativeLibrary.GetExport(lib, name);
            InitFromFile = (delegate* unmanaged<byte*, GgufInitParams, nint>)F("gguf_init_from_file");
            InitEmpty = (delegate* unmanaged<nint>)F("gguf_init_empty");
            Free = (delegate* unmanaged<nint, void>)F("gguf_free");
            GetVersion = (delegate* unmanaged<nint, uint>)F("gguf_get_version");
            GetAlignment = (delegate* unmanaged<nint, nuint>)F("gguf_get_alignment");
            GetDataOffset = (delegate* unmanaged<nint, nuint>)F("gguf_get_data_offset");
            GetNKv = (delegate* unmanaged<nint, long>)F("gguf_get_n_kv");
            GetKey = (delegate* unmanaged<nint, long, byte*>)F("gguf_get_key");
            GetKvType = (delegate* unmanaged<nint, long, int>)F("gguf_get_kv_type");
            GetArrType = (delegate* unmanaged<nint, long, int>)F("gguf_get_arr_type");
            GetArrN = (delegate* unmanaged<nint, long, nuint>)F("gguf_get_arr_n");
            GetArrData = (delegate* unmanaged<nint, long, void*>)F("gguf_get_arr_data");
            GetArrStr = (delegate* unmanaged<nint, long, nuint, byte*>)F("gguf_get_arr_str");
            GetValData = (delegate* unmanaged<nint, long, void*>)F("gguf_get_val_data");
            GetValStr = (delegate* unmanaged<nint, long, byte*>)F("gguf_get_val_str");
            GetNTensors = (delegate* unmanaged<nint, long>)F("gguf_get_n_tensors");
            GetTensorName = (delegate* unmanaged<nint, long, byte*>)F("gguf_get_tensor_name");
            GetTensorOffset = (delegate* unmanaged<nint, long, nuint>)F("gguf_get_tensor_offset");
            GetTensorType = (delegate* unmanaged<nint, long, int>)F("gguf_get_tensor_type");
            GetTensorSize = (delegate* unmanaged<nint, long, nuint>)F("gguf_get_tensor_size");
            SetValU32 = (delegate* unmanaged<nint, byte*, uint, void>)F("gguf_set_val_u32");
            SetValI8 = (delegate* unmanaged<nint, byte*, sbyte, void>)F("gguf_set_val_i8");
            SetValI64 = (delegate* unmanaged<nint, byte*, long, void>)F("gguf_set_val_i64");
            SetValF64 = (delegate* unmanaged<nint, byte*, double, void>)F("gguf_set_val_f64");
            SetValF32 = (delegate* unmanaged<nint, byte*, float, void>)F("gguf_set_val_f32");
            SetValBool = (delegate* unmanaged<nint, byte*, byte, void>)F("gguf_set_val_bool");
            SetValStr = (delegate* unmanaged<nint, byte*, byte*, void>)F("gguf_set_val_str");
            SetArrData = (delegate* unmanaged<nint, byte*, int, void*, nuint, void>)F("gguf_set_arr_data");
            SetArrStr = (delegate* unmanaged<nint, byte*, byte**, nuint, void>)F("gguf_set_arr_str");
            WriteToFile = (delegate* unmanaged<nint, byte*, byte, byte>)F("gguf_write_to_file");
        }
    }

    private static readonly Lazy<(Ggml? Api, string Why)> Library = new(Load);

    private static (Ggml?, string) Load()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64)
            return (null, "the ggml cross-check uses the linux-x64 build of libggml-base");
        // The 'noavx' build runs on any x86-64 CPU; the gguf code does not need SIMD.
        var candidates = new List<string>();
        candidates.AddRange(SafeFind(AppContext.BaseDirectory));
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        candidates.AddRange(SafeFind(Path.Combine(packages, "llamasharp.backend.cpu")));
        string? path = candidates.Where(p => p.Contains($"{Path.DirectorySeparatorChar}noavx{Path.DirectorySeparatorChar}")).Concat(candidates).FirstOrDefault();
        if (path is null) return (null, "libggml-base.so (LLamaSharp.Backend.Cpu) was not found next to the tests or in the NuGet cache");
        try { return (new Ggml(NativeLibrary.Load(path)), path); }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException or EntryPointNotFoundException)
        { return (null, $"{path} could not be loaded: {e.Message}"); }
    }

    private static IEnumerable<string> SafeFind(string root)
        => Directory.Exists(root)
            ? Directory.EnumerateFiles(root, "libggml-base.so", SearchOption.AllDirectories).Where(p => p.Contains("linux-x64")).Order()
            : [];

    private static Ggml Api()
    {
        var (api, why) = Library.Value;
        if (api is null) Assert.Skip(why);
        return api;
    }

    private static byte[] Utf8Z(string s) => [.. System.Text.Encoding.UTF8.GetBytes(s), 0];

    private static string Str(byte* p) => Marshal.PtrToStringUTF8((nint)p)!;

    private static string TempPath() => Path.Combine(Path.GetTempPath(), $"gguf-ggml-{Guid.NewGuid():N}.gguf");

    /// <summary>A file using every feature ggml accepts (ggml does not accept nested arrays, so it has none).</summary>
    private static GgufWriter InteropSample(uint version, uint alignment)
    {
        return new GgufWriter(new GgufWriterOptions { Version = version, Alignment = alignment, PaddingByte = 0 })
            .AddMetadata("general.architecture", GgufValue.String("llama"))
            .AddMetadata("u8", GgufValue.UInt8(200))
            .AddMetadata("i16", GgufValue.Int16(-300))
            .AddMetadata("u32", GgufValue.UInt32(4096))
            .AddMetadata("i64", GgufValue.Int64(-1L << 40))
            .AddMetadata("f32", GgufValue.Float32(1e-5f))
            .AddMetadata("f64", GgufValue.Float64(-2.5))
            .AddMetadata("flag", GgufValue.Bool(true))
            .AddMetadata("tokens", GgufValue.StringArray(["<s>", "", "ü▁x"]))
            .AddMetadata("scores", GgufValue.Float32Array([0.5f, -1f]))
            .AddMetadata("types", GgufValue.Int32Array([1, 2, 3, 6]))
            .AddMetadata("bools", GgufValue.BoolArray([false, true]))
            .AddMetadata("empty", GgufValue.UInt64Array([]))
            .AddTensor("token_embd.weight", GgmlType.Q8_0, [64, 3], Data(3 * 2 * 34, 1))
            .AddTensor("blk.0.ffn_down.weight", GgmlType.Q4_K, [256, 2], Data(2 * 144, 2))
            .AddTensor("output_norm.weight", GgmlType.F32, [5], Data(20, 3))
            .AddTensor("rope", GgmlType.F16, [3, 1, 2], Data(12, 4));
    }

    [Theory]
    [InlineData("magic")]
    [InlineData("version")]
    [InlineData("kv_count")]
    [InlineData("tensor_type")]
    [InlineData("n_dims")]
    [InlineData("misaligned")]
    [InlineData("past_end")]
    public void Files_rejected_here_are_rejected_by_ggml_too(string defect)
    {
        var ggml = Api();
        byte[] valid = InteropSample(3, 32).ToBytes();
        var info = TensorInfoAt(valid, "output_norm.weight");
        byte[] bad = valid.With(b =>
        {
            switch (defect)
            {
                case "magic": b[0] = (byte)'X'; break;
                case "version": b.PutUInt32(4, 1); break;
                case "kv_count": b.PutUInt64(16, 1UL << 62); break;
                case "tensor_type": b.PutUInt32(info.Type, 4); break;
                case "n_dims": b.PutUInt32(info.NDims, 5); break;
                case "misaligned": b.PutUInt64(info.Offset, b.GetUInt64(info.Offset) + 4); break;
                case "past_end": b.PutUInt64(info.Offset, 1UL << 40); break;
            }
        });
        Assert.Throws<GgufFormatException>(() => Parse(bad));
        string path = TempPath();
        try
        {
            File.WriteAllBytes(path, bad);
            nint ctx;
            fixed (byte* p = Utf8Z(path)) ctx = ggml.InitFromFile(p, new GgufInitParams { NoAlloc = 1 });
            if (ctx != 0) ggml.Free(ctx);
            Assert.True(ctx == 0, $"ggml accepted the '{defect}' file");
        }
        finally { File.Delete(path); }
    }

    [Theory]
    [InlineData(3u, 32u)]
    [InlineData(2u, 32u)]
    [InlineData(3u, 64u)]
    public void Files_written_here_parse_identically_in_ggml(uint version, uint alignment)
    {
        var ggml = Api();
        var writer = InteropSample(version, alignment);
        string path = TempPath();
        nint ctx = 0;
        try
        {
            writer.WriteTo(path);
            var ours = GgufReader.Read(path);
            fixed (byte* p = Utf8Z(path)) ctx = ggml.InitFromFile(p, new GgufInitParams { NoAlloc = 1 });
            Assert.True(ctx != 0, "ggml rejected a file written by GgufWriter (its reason is on stderr)");

            Assert.Equal(version, ggml.GetVersion(ctx));
            Assert.Equal(alignment, (uint)ggml.GetAlignment(ctx));
            Assert.Equal(ours.DataSectionOffset, (long)ggml.GetDataOffset(ctx));
            Assert.Equal(ours.Metadata.Count, ggml.GetNKv(ctx));
            int k = 0;
            foreach (var (key, value) in ours.Metadata)
            {
                Assert.Equal(key, Str(ggml.GetKey(ctx, k)));
                Assert.Equal((int)value.Type, ggml.GetKvType(ctx, k));
                if (value.Type == GgufValueType.String)
                    Assert.Equal(value.AsString(), Str(ggml.GetValStr(ctx, k)));
                else if (value.Type == GgufValueType.Array)
                {
                    Assert.Equal((int)value.ElementType, ggml.GetArrType(ctx, k));
                    Assert.Equal(value.Count, (int)ggml.GetArrN(ctx, k));
                    if (value.ElementType == GgufValueType.String)
                        for (int i = 0; i < value.Count; i++) Assert.Equal(value.AsStringArray()[i], Str(ggml.GetArrStr(ctx, k, (nuint)i)));
                    else if (value.Count > 0)
                        Assert.Equal(GgufValue.RawBytes(value.ArrayStorage).ToArray(), new ReadOnlySpan<byte>(ggml.GetArrData(ctx, k), GgufValue.RawBytes(value.ArrayStorage).Length).ToArray());
                }
                else
                {
                    int size = value.Type switch { GgufValueType.UInt8 or GgufValueType.Bool => 1, GgufValueType.Int16 => 2, GgufValueType.UInt32 or GgufValueType.Float32 => 4, _ => 8 };
                    var theirs = new ReadOnlySpan<byte>(ggml.GetValData(ctx, k), size);
                    Assert.Equal(BitConverter.GetBytes(value.RawBits)[..size], theirs.ToArray());
                }
                k++;
            }

            Assert.Equal(ours.Tensors.Count, ggml.GetNTensors(ctx));
            foreach (var t in ours.Tensors)
            {
                Assert.Equal(t.Name, Str(ggml.GetTensorName(ctx, t.Index)));
                Assert.Equal(t.RelativeOffset, (long)ggml.GetTensorOffset(ctx, t.Index));
                Assert.Equal((int)t.Info.Type, ggml.GetTensorType(ctx, t.Index));
                Assert.Equal(t.ByteSize, (long)ggml.GetTensorSize(ctx, t.Index));
            }
        }
        finally
        {
            if (ctx != 0) ggml.Free(ctx);
            File.Delete(path);
        }
    }

    [Fact]
    public void Files_written_by_ggml_parse_identically_here()
    {
        var ggml = Api();
        string path = TempPath();
        nint ctx = ggml.InitEmpty();
        try
        {
            fixed (byte* arch = Utf8Z("general.architecture"), llama = Utf8Z("llama"), ctxLen = Utf8Z("llama.context_length"),
                   i8 = Utf8Z("i8"), i64 = Utf8Z("i64"), f32 = Utf8Z("f32"), f64 = Utf8Z("f64"), flag = Utf8Z("flag"),
                   scores = Utf8Z("scores"), tokens = Utf8Z("tokens"), a = Utf8Z("<unk>"), b = Utf8Z("ü"), c = Utf8Z(""))
            {
                ggml.SetValStr(ctx, arch, llama);
                ggml.SetValU32(ctx, ctxLen, 2048);
                ggml.SetValI8(ctx, i8, -7);
                ggml.SetValI64(ctx, i64, long.MinValue);
                ggml.SetValF32(ctx, f32, 0.125f);
                ggml.SetValF64(ctx, f64, Math.E);
                ggml.SetValBool(ctx, flag, 1);
                float[] values = [1f, -0.5f, float.MaxValue];
                fixed (float* v = values) ggml.SetArrData(ctx, scores, (int)GgufValueType.Float32, v, (nuint)values.Length);
                byte** strings = stackalloc byte*[] { a, b, c };
                ggml.SetArrStr(ctx, tokens, strings, 3);
            }
            fixed (byte* p = Utf8Z(path)) Assert.Equal(1, ggml.WriteToFile(ctx, p, 0));

            var file = GgufReader.Read(path);

            Assert.Equal(3u, file.Version);
            Assert.Equal(["general.architecture", "llama.context_length", "i8", "i64", "f32", "f64", "flag", "scores", "tokens"], file.Metadata.Keys);
            Assert.Equal(GgufValue.String("llama"), file.Metadata["general.architecture"]);
            Assert.Equal(GgufValue.UInt32(2048), file.Metadata["llama.context_length"]);
            Assert.Equal(GgufValue.Int8(-7), file.Metadata["i8"]);
            Assert.Equal(GgufValue.Int64(long.MinValue), file.Metadata["i64"]);
            Assert.Equal(GgufValue.Float32(0.125f), file.Metadata["f32"]);
            Assert.Equal(GgufValue.Float64(Math.E), file.Metadata["f64"]);
            Assert.Equal(GgufValue.Bool(true), file.Metadata["flag"]);
            Assert.Equal(GgufValue.Float32Array([1f, -0.5f, float.MaxValue]), file.Metadata["scores"]);
            Assert.Equal(GgufValue.StringArray(["<unk>", "ü", ""]), file.Metadata["tokens"]);
            Assert.Empty(file.Tensors);
        }
        finally
        {
            ggml.Free(ctx);
            File.Delete(path);
        }
    }
}

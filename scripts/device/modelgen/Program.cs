using System.Diagnostics;
using PluginEngine.Core.Models;

// Usage: modelgen OUTDIR [compare|bench]...   |   modelgen --dequantize SRC.gguf DST.gguf
// compare: small llama models (d = 768, ff = 2304: row lengths with ne0 % 512 != 0, so quantized tensors need slides)
//          in each weight type, plus a Q4_K_M file with 4 KiB tensor alignment and zero gaps (slides fit: host import possible)
//          and the same with 0xFF gaps (slides do not read zero: every quantized tensor must be copied).
// bench:   a wider Q4_K_M and Q8_0 model for run timings.
if (args.Length == 3 && args[0] == "--dequantize") return Dequantize(args[1], args[2]);
if (args.Length < 1) { Console.Error.WriteLine("usage: modelgen OUTDIR [compare] [bench]"); return 2; }
string dir = args[0];
Directory.CreateDirectory(dir);
var sets = args.Length > 1 ? args[1..] : ["compare"];
var specs = new List<(string File, SyntheticModelSpec Spec)>();
var small = new SyntheticModelSpec
{
    VocabularySize = 4096, EmbeddingLength = 768, BlockCount = 4, HeadCount = 12, KvHeadCount = 4, FeedForwardLength = 2304,
    ContextLength = 2048, Seed = 7,
};
if (sets.Contains("compare"))
{
    foreach (var type in new[] { SyntheticWeightType.F16, SyntheticWeightType.BF16, SyntheticWeightType.Q8_0, SyntheticWeightType.Q4_0,
                                 SyntheticWeightType.Q5_K, SyntheticWeightType.Q4_K_M })
        specs.Add(($"cmp-{type}.gguf".ToLowerInvariant(), small with { Name = $"cmp-{type}", WeightType = type }));
    specs.Add(("seed-q4_k_m-a4096.gguf", small with { Name = "seed-clean-gaps", WeightType = SyntheticWeightType.Q4_K_M, Alignment = 4096 }));
    specs.Add(("seed-q4_k_m-dirty.gguf", small with { Name = "seed-dirty-gaps", WeightType = SyntheticWeightType.Q4_K_M, Alignment = 4096, PaddingByte = 0xFF }));
}
if (sets.Contains("bench"))
    foreach (var type in new[] { SyntheticWeightType.Q4_K_M, SyntheticWeightType.Q8_0 })
        specs.Add(($"bench-{type}.gguf".ToLowerInvariant(), new SyntheticModelSpec
        {
            Name = $"bench-{type}", VocabularySize = 32000, EmbeddingLength = 2048, BlockCount = 8, HeadCount = 32, KvHeadCount = 4,
            FeedForwardLength = 5632, ContextLength = 2048, WeightType = type, Seed = 11,
        }));
Parallel.ForEach(specs, s =>
{
    var clock = Stopwatch.StartNew();
    string path = Path.Combine(dir, s.File);
    SyntheticModel.Write(s.Spec, path);
    Console.WriteLine($"{path}: {new FileInfo(path).Length:N0} B in {clock.Elapsed.TotalSeconds:F1} s");
});
return 0;

// The same model with every quantized tensor dequantized to F32 (by the core's scalar reference): run on the CPU backend,
// whose F32 matmul uses F32 activations, it is an oracle for GPU kernels that dequantize weights and keep activations
// in F32 (the CPU's quantized path quantizes activations to Q8, which differs by more than rounding).
static int Dequantize(string source, string destination)
{
    var file = PluginEngine.Core.Gguf.GgufReader.Read(source);
    var writer = new PluginEngine.Core.Gguf.GgufWriter();
    foreach (var (key, value) in file.Metadata)
        if (key != "general.alignment") writer.AddMetadata(key, value);
    using var stream = File.OpenRead(source);
    foreach (var t in file.Tensors)
    {
        var bytes = new byte[t.ByteSize];
        stream.Position = t.FileOffset;
        stream.ReadExactly(bytes);
        if (!t.Info.TypeInfo.IsQuantized) { writer.AddTensor(t.Info, bytes); continue; }
        var values = new float[t.Info.ElementCount];
        PluginEngine.Core.Quantization.Dequantizer.Dequantize(t.Info.Type, bytes, values);
        var f32 = new byte[values.Length * sizeof(float)];
        Buffer.BlockCopy(values, 0, f32, 0, f32.Length);
        writer.AddTensor(t.Name, PluginEngine.Abstractions.GgmlType.F32, t.Info.Dims.ToArray(), f32);
    }
    writer.WriteTo(destination);
    Console.WriteLine($"{destination}: {new FileInfo(destination).Length:N0} B (F32 copy of {source})");
    return 0;
}

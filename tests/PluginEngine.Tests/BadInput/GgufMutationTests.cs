using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Models;
using Xunit;

namespace PluginEngine.Tests.BadInput;

/// <summary>
/// Issue 18's seeded mutation test: thousands of corrupted copies of the demo model, each run through the CLI's
/// <c>run</c> exactly as a user would (<see cref="PluginEngine.Host.Cli.Run"/>, in-process). Every case must exit 0
/// (the corruption was harmless) or 2 (a user error naming what is wrong) — never 1 (internal error), never an exception
/// out of the CLI, never a hang, and never more than <see cref="AllocationCapBytes"/> allocated by the case.
/// The generator is our own: it walks the GGUF header to find every structural field (counts, string lengths, type
/// tags, array headers, scalar values, tensor dims/types/offsets) and writes interesting values there, flips random
/// header bytes, truncates the file, or writes NaN/Inf/garbage into tensor data. Mutations are applied in place to one
/// copy of the file and undone after each case, so a case costs a few written bytes, not a 20 MB copy.
/// A failure message gives the seed and case number; rerun one case with PLUGINENGINE_MUTATION_CASE=N.
/// </summary>
public sealed class GgufMutationTests(ITestOutputHelper log)
{
    private const ulong Seed = 0x5EED_0018;
    private const int Cases = 2000;
    private const long AllocationCapBytes = 512L << 20;
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(60);

    [Fact]
    public void Every_mutation_of_the_demo_model_exits_0_or_2_under_a_memory_cap()
    {
        using var fixture = new BadInputFixture();
        string demo = DemoModel.EnsureExists();
        string target = Path.Combine(fixture.Directory, "mutant.gguf");
        byte[] original = File.ReadAllBytes(demo);
        File.WriteAllBytes(target, original);
        var fields = HeaderWalker.Walk(original);
        var gguf = GgufReader.Read(demo);
        var generator = new MutationGenerator(original, fields, gguf);

        int only = int.TryParse(Environment.GetEnvironmentVariable("PLUGINENGINE_MUTATION_CASE"), out int c) ? c : -1;
        var codes = new int[3];
        var firstMessages = new Dictionary<string, int>();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < Cases; i++)
        {
            var mutation = generator.Next(Seed, i);
            if (only >= 0 && i != only) continue;
            mutation.Apply(target);
            try
            {
                var (code, err, allocated) = RunCase(fixture, target);
                string what = $"seed {Seed:X}, case {i}: {mutation}";
                Assert.True(code is 0 or 2, $"{what}: exit {code}\n{err}");
                Assert.True(allocated <= AllocationCapBytes, $"{what}: allocated {allocated:N0} B (cap {AllocationCapBytes:N0})\n{err}");
                codes[code]++;
                if (code == 2)
                {
                    string first = err.Split('\n').FirstOrDefault(l => l.StartsWith("error:", StringComparison.Ordinal))?.Replace(target, "FILE") ?? "(no error line)";
                    string kind = first.Contains("invalid GGUF", StringComparison.Ordinal) ? "invalid GGUF" : first.Length > 70 ? first[..70] : first;
                    firstMessages[kind] = firstMessages.GetValueOrDefault(kind) + 1;
                }
            }
            finally
            {
                mutation.Undo(target);
            }
        }
        log.WriteLine($"{Cases} cases in {clock.Elapsed.TotalSeconds:F1} s: {codes[0]} ran (exit 0), {codes[2]} refused (exit 2)");
        foreach (var (kind, count) in firstMessages.OrderByDescending(kv => kv.Value).Take(15)) log.WriteLine($"{count,6}  {kind}");
        if (only < 0)
        {
            // The generator must reach both outcomes, or it tests nothing.
            Assert.True(codes[0] > Cases / 50, $"only {codes[0]} cases ran to the end");
            Assert.True(codes[2] > Cases / 2, $"only {codes[2]} cases were refused");
        }
    }

    private static (int Code, string Err, long Allocated) RunCase(BadInputFixture fixture, string model)
    {
        var task = Task.Factory.StartNew(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            var output = new StringWriter();
            var error = new StringWriter();
            int code = PluginEngine.Host.Cli.Run(["--plugins", fixture.CpuOnlyPlugins, "run", "-m", model, "-p", "Once", "-n", "2", "-c", "32", "--no-warmup", "--seed", "1"], output, error);
            return (code, error.ToString(), GC.GetAllocatedBytesForCurrentThread() - before);
        }, TaskCreationOptions.LongRunning);
        if (!task.Wait(CaseTimeout)) throw new TimeoutException($"a case ran longer than {CaseTimeout}: {model}");
        return task.Result;
    }

    /// <summary>One structural field of the header: where it is, how wide, and what it is.</summary>
    private readonly record struct Field(long Offset, int Size, string What);

    /// <summary>Walks a GGUF v2/v3 header and lists its fields (the generator's targets).</summary>
    private static class HeaderWalker
    {
        private static readonly int[] ScalarSizes = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];

        public static List<Field> Walk(byte[] file)
        {
            var fields = new List<Field>();
            long p = 4;
            fields.Add(new(p, 4, "version")); p += 4;
            ulong tensors = BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan((int)p));
            fields.Add(new(p, 8, "tensor_count")); p += 8;
            ulong kvs = BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan((int)p));
            fields.Add(new(p, 8, "kv_count")); p += 8;
            for (ulong i = 0; i < kvs; i++)
            {
                string key = ReadString(file, ref p, fields, "key");
                uint type = BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan((int)p));
                fields.Add(new(p, 4, $"{key}.type")); p += 4;
                ReadValue(file, ref p, type, key, fields, depth: 0);
            }
            for (ulong t = 0; t < tensors; t++)
            {
                string name = ReadString(file, ref p, fields, "tensor name");
                uint dims = BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan((int)p));
                fields.Add(new(p, 4, $"{name}.n_dims")); p += 4;
                for (uint d = 0; d < dims; d++) { fields.Add(new(p, 8, $"{name}.dims[{d}]")); p += 8; }
                fields.Add(new(p, 4, $"{name}.type")); p += 4;
                fields.Add(new(p, 8, $"{name}.offset")); p += 8;
            }
            return fields;
        }

        private static string ReadString(byte[] file, ref long p, List<Field> fields, string what)
        {
            ulong length = BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan((int)p));
            fields.Add(new(p, 8, $"{what} length"));
            p += 8;
            string s = Encoding.UTF8.GetString(file, (int)p, (int)length);
            p += (long)length;
            return s;
        }

        private static void ReadValue(byte[] file, ref long p, uint type, string key, List<Field> fields, int depth)
        {
            switch (type)
            {
                case 8:
                    // Only the first few strings of an array are targets: a 4096-token vocabulary would swamp the list.
                    if (depth == 0 || fields.Count % 64 == 0) ReadString(file, ref p, fields, key);
                    else p += 8 + (long)BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan((int)p));
                    break;
                case 9:
                    uint element = BinaryPrimitives.ReadUInt32LittleEndian(file.AsSpan((int)p));
                    fields.Add(new(p, 4, $"{key}.element_type")); p += 4;
                    ulong count = BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan((int)p));
                    fields.Add(new(p, 8, $"{key}.count")); p += 8;
                    for (ulong i = 0; i < count; i++)
                    {
                        if (element is 8 or 9) ReadValue(file, ref p, element, key, fields, depth + 1);
                        else
                        {
                            if (i < 4) fields.Add(new(p, ScalarSizes[element], $"{key}[{i}]"));
                            p += ScalarSizes[element];
                        }
                    }
                    break;
                default:
                    fields.Add(new(p, ScalarSizes[type], $"{key} value"));
                    p += ScalarSizes[type];
                    break;
            }
        }
    }

    /// <summary>A change to the file and how to undo it.</summary>
    private sealed class Mutation(string description, Action<FileStream> apply, Action<FileStream> undo)
    {
        public void Apply(string path) { using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite); apply(f); }
        public void Undo(string path) { using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite); undo(f); }
        public override string ToString() => description;
    }

    /// <summary>The seeded generator: case i of seed s is always the same mutation.</summary>
    private sealed class MutationGenerator(byte[] original, List<Field> fields, GgufFile gguf)
    {
        private static readonly ulong[] Interesting =
        [
            0, 1, 2, 3, 7, 8, 9, 12, 13, 31, 32, 33, 255, 256, 4095, 4096, 4097, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
            0x100000000, 300_000_000, 0x7FFFFFFFFFFFFFFF, 0x8000000000000005, 0xFFFFFFFFFFFFFFFF,
            0x7FC00000 /* NaN as float32 */, 0x7F800000 /* +Inf */, 0xFF800000 /* -Inf */, 0x80000000 /* -0f */, 0x3F800000 /* 1f */,
        ];

        public Mutation Next(ulong seed, int index)
        {
            var rng = new Random((int)(seed ^ (ulong)index * 0x9E3779B97F4A7C15UL));
            int kind = rng.Next(100);
            if (kind < 60)
            {
                // A structural field set to an interesting value, or the original ± a little, or random bits.
                var field = fields[rng.Next(fields.Count)];
                ulong current = ReadField(field);
                ulong value = rng.Next(4) switch
                {
                    0 => current + (ulong)rng.Next(1, 4),
                    1 => current - (ulong)rng.Next(1, 4),
                    2 => (ulong)rng.NextInt64() ^ ((ulong)rng.NextInt64() << 1),
                    _ => Interesting[rng.Next(Interesting.Length)],
                };
                var bytes = new byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
                return Overwrite($"{field.What} @ {field.Offset} ({field.Size} B): {current} → {value & Mask(field.Size)}", field.Offset, bytes[..field.Size]);
            }
            if (kind < 78)
            {
                // Random bytes anywhere in the header (strings included).
                long offset = rng.NextInt64(0, gguf.DataSectionOffset);
                var bytes = new byte[rng.Next(1, 5)];
                rng.NextBytes(bytes);
                bytes = bytes[..(int)Math.Min(bytes.Length, gguf.DataSectionOffset - offset)];
                return Overwrite($"{bytes.Length} random header byte(s) @ {offset}", offset, bytes);
            }
            if (kind < 88)
            {
                // Truncation: mostly inside the header, sometimes inside the data.
                long length = rng.Next(3) == 0 ? rng.NextInt64(gguf.DataSectionOffset, original.Length) : rng.NextInt64(0, gguf.DataSectionOffset);
                return new Mutation($"truncated to {length} B", f => f.SetLength(length), f => { f.Position = length; f.Write(original, (int)length, original.Length - (int)length); });
            }
            {
                // Tensor data: NaN, Inf, huge or random values somewhere in one tensor.
                var tensor = gguf.Tensors[rng.Next(gguf.Tensors.Count)];
                long offset = tensor.FileOffset + rng.NextInt64(0, Math.Max(1, tensor.ByteSize - 8));
                byte[] bytes = rng.Next(4) switch
                {
                    0 => BitConverter.GetBytes(float.NaN),
                    1 => BitConverter.GetBytes(float.PositiveInfinity),
                    2 => [0xFF, 0x7F, 0xFF, 0x7F], // F16 max / large scales
                    _ => RandomBytes(rng, 8),
                };
                int count = rng.Next(1, 64);
                var run = new byte[Math.Min(bytes.Length * count, (int)(tensor.FileEnd - offset))];
                for (int i = 0; i < run.Length; i++) run[i] = bytes[i % bytes.Length];
                return Overwrite($"{run.Length} data byte(s) of {tensor.Name} ({tensor.Info.Type}) @ {offset}", offset, run);
            }
        }

        private static byte[] RandomBytes(Random rng, int n)
        {
            var b = new byte[n];
            rng.NextBytes(b);
            return b;
        }

        private static ulong Mask(int size) => size >= 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;

        private ulong ReadField(Field f)
        {
            Span<byte> b = stackalloc byte[8];
            b.Clear();
            original.AsSpan((int)f.Offset, f.Size).CopyTo(b);
            return BinaryPrimitives.ReadUInt64LittleEndian(b);
        }

        private Mutation Overwrite(string what, long offset, byte[] bytes)
            => new(what, f => { f.Position = offset; f.Write(bytes); }, f => { f.Position = offset; f.Write(original, (int)offset, bytes.Length); });
    }
}

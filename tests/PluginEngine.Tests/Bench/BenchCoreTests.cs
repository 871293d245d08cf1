using PluginEngine.Bench;
using Xunit;

namespace PluginEngine.Tests.Bench;

public sealed class BenchCoreTests
{
    [Fact]
    public void Token_ids_start_with_bos_stay_in_the_vocabulary_and_repeat_exactly()
    {
        int[] a = BenchTokens.Create(1000, 37, bosTokenId: 1);
        int[] b = BenchTokens.Create(1000, 37, bosTokenId: 1);

        Assert.Equal(1, a[0]);
        Assert.Equal(a, b);
        Assert.All(a, id => Assert.InRange(id, 0, 36));
        Assert.True(a.Distinct().Count() > 30); // spread over the vocabulary, not a constant
        // A shorter request is a prefix of a longer one: depth, prompt and generation slice one sequence.
        Assert.Equal(a[..100], BenchTokens.Create(100, 37, bosTokenId: 1));
        // No BOS: the first id is pseudo-random too.
        Assert.Equal(a[1..10], BenchTokens.Create(10, 37, bosTokenId: -1)[..9]);
    }

    [Fact]
    public void Token_ids_reject_a_bos_outside_the_vocabulary()
        => Assert.Throws<ArgumentOutOfRangeException>(() => BenchTokens.Create(4, 10, bosTokenId: 10));

    [Fact]
    public void Statistics_use_the_sample_standard_deviation()
    {
        var s = SampleStatistics.Of([2, 4, 4, 4, 5, 5, 7, 9]);
        Assert.Equal(5, s.Mean, 12);
        Assert.Equal(Math.Sqrt(32.0 / 7), s.StandardDeviation, 12);
        Assert.Equal(new SampleStatistics(3, 0), SampleStatistics.Of([3]));
        Assert.Throws<ArgumentException>(() => SampleStatistics.Of([]));
    }

    [Theory]
    [InlineData(512, 0, 0, "pp512")]
    [InlineData(0, 128, 0, "tg128")]
    [InlineData(512, 128, 0, "pp512+tg128")]
    [InlineData(0, 32, 4096, "tg32 @ d4096")]
    public void Test_names_follow_llama_bench(int prompt, int generated, int depth, string name)
    {
        var test = new BenchTest(prompt, generated, depth);
        Assert.Equal(name, test.Name);
        Assert.Equal(prompt + generated, test.TimedTokens);
        Assert.Equal(depth + prompt + generated, test.ContextTokens);
    }

    [Fact]
    public void Measurement_averages_rates_not_times()
    {
        var m = new BenchMeasurement(new BenchTest(100, 0, 0), [1_000_000_000, 500_000_000]);
        Assert.Equal([100.0, 200.0], m.SamplesTokensPerSecond);
        Assert.Equal(150, m.TokensPerSecond.Mean, 9);
        Assert.Equal(750_000_000, m.Nanoseconds.Mean, 3);
    }

    [Fact]
    public void Ratios_attach_to_rows_with_the_same_model_test_threads_and_batches()
    {
        BenchResult Row(string backend, int threads, int prompt, double ts) => new()
        {
            Backends = backend, ModelFilename = "/models/a.gguf", NThreads = threads, NPrompt = prompt, NBatch = 2048, NUbatch = 512, AvgTs = ts,
        };
        var ours = new[] { Row("cpu", 4, 512, 50), Row("cpu", 2, 512, 30), Row("cpu", 4, 128, 10) };
        var reference = new[] { Row("llama.cpp", 4, 512, 100), Row("llama.cpp", 4, 128, 0) };

        LlamaCppReference.AttachRatios(ours, reference);

        Assert.Equal(0.5, ours[0].RatioVsLlamacpp);
        Assert.Null(ours[1].RatioVsLlamacpp); // no reference row at 2 threads
        Assert.Null(ours[2].RatioVsLlamacpp); // a zero reference rate gives no ratio
        Assert.Null(reference[0].RatioVsLlamacpp);
    }

    [Fact]
    public void Jsonl_round_trips_rows_and_names_the_bad_line()
    {
        var row = new BenchResult { Backends = "llama.cpp", Test = "tg4", NGen = 4, AvgTs = 12.5, SamplesNs = [1, 2], HugepagesBefore = null };
        var writer = new StringWriter();
        BenchOutput.WriteJsonLine(writer, row);

        var read = Assert.Single(BenchOutput.ReadJsonLines(writer.ToString() + "\n\n", "test"));
        Assert.Equal(("llama.cpp", "tg4", 4, 12.5), (read.Backends, read.Test, read.NGen, read.AvgTs));
        Assert.Equal([1L, 2L], read.SamplesNs);

        var e = Assert.Throws<FormatException>(() => BenchOutput.ReadJsonLines(writer + "loading model...\n", "reference output"));
        Assert.Contains("reference output: line 2", e.Message);
    }

    [Fact]
    public void Memory_is_shown_per_device_when_several_devices_hold_it_and_as_a_total_otherwise()
    {
        BenchDeviceMemory Device(string name, long owned, long imported, long context)
            => new() { Device = name, WeightsOwnedBytes = owned, WeightsImportedBytes = imported, ContextBytes = context };
        var split = new BenchResult
        {
            Backends = "cuda", Test = "tg4", NDepth = 8, WeightsOwnedBytes = 3L << 30, WeightsImportedBytes = 1L << 20, ContextBytes = 3L << 20,
            HostRegisteredBytes = 0, DeviceMemory = [Device("cuda", 3L << 30, 0, 2L << 20), Device("cpu", 0, 1L << 20, 1L << 20)],
        };
        var single = new BenchResult
        {
            Backends = "cpu", Test = "tg4", NDepth = 8, WeightsOwnedBytes = 0, WeightsImportedBytes = 1L << 20, ContextBytes = 1L << 20,
            DeviceMemory = [Device("cpu", 0, 1L << 20, 1L << 20)],
        };
        var output = new StringWriter();
        BenchOutput.WriteMarkdown(output, [split, single], new MachineInfo("cpu model", "AVX2", 2, "linux", ".NET"), []);
        string[][] table = output.ToString().Split('\n').Where(l => l.StartsWith('|'))
            .Select(l => l.Split('|').Select(c => c.Trim()).ToArray()).ToArray();
        Assert.Contains("host registered", table[0]);
        string[] splitRow = table.Single(r => r.Contains("cuda"));
        Assert.Contains("cuda 2.00 MiB + cpu 1.00 MiB", splitRow); // context, per device
        Assert.Contains("3.00 GiB", splitRow);                     // weights owned: only the GPU owns any
        string[] cpuRow = table.Single(r => r.Contains("cpu"));
        Assert.DoesNotContain(cpuRow, c => c.Contains(" + ", StringComparison.Ordinal));

        var csv = new StringWriter();
        BenchOutput.WriteCsv(csv, [split]);
        Assert.Contains("device=cuda;weights_owned_bytes=3221225472;weights_imported_bytes=0;context_bytes=2097152;device_used_bytes=0 device=cpu;", csv.ToString());
    }

    [Fact]
    public void Byte_and_parameter_formats()
    {
        Assert.Equal("0 B", BenchOutput.FormatBytes(0));
        Assert.Equal("1.50 KiB", BenchOutput.FormatBytes(1536));
        Assert.Equal("637.81 MiB", BenchOutput.FormatBytes(668_788_416));
        Assert.Equal("1.1B", BenchModelFacts.FormatParameters(1_100_048_384));
        Assert.Equal("16.8M", BenchModelFacts.FormatParameters(16_781_824));
    }
}

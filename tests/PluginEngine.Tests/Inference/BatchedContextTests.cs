using PluginEngine.Abstractions;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Inference;

/// <summary>
/// The multi-sequence context (docs/batching.md#the-batched-context): several sequences evaluated in one forward pass give
/// each sequence the logits it gets when evaluated alone — sequences of mixed lengths, joining and leaving between steps,
/// a slot reused after its sequence ended — on the CPU backend, with partial offload and with op fallback.
/// On the CPU the two are equal bit for bit for every weight type (docs/batching.md#batch-invariance-on-the-cpu): its matmul
/// computes each token row with the same float operations whatever the batch, and the per-segment rope/store/attention are
/// the single-sequence kernels on offset tensors.
/// </summary>
public sealed class BatchedContextTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "pluginengine-batched-" + Guid.NewGuid().ToString("N"));

    private string Model(SyntheticWeightType type)
    {
        Directory.CreateDirectory(_folder);
        string path = Path.Combine(_folder, $"model-{type}.gguf");
        if (!File.Exists(path))
            SyntheticModel.Write(new SyntheticModelSpec
            {
                // 256 wide (a K-quant super-block), heads of 64; ff 512.
                Name = "batched", VocabularySize = 320, EmbeddingLength = 256, BlockCount = 2, HeadCount = 4, KvHeadCount = 2,
                FeedForwardLength = 512, ContextLength = 64, WeightType = type, Seed = 23,
            }, path);
        return path;
    }

    /// <summary>One step of the script: (sequence, tokens) pairs evaluated together; a sequence absent from a step waits.</summary>
    private static readonly (int Sequence, int[] Tokens)[][] Script =
    [
        [(0, [1, 17, 250, 3, 99, 42, 7])],                          // a 7-token prompt alone
        [(0, [5]), (1, [1, 44, 45])],                               // a decode token next to a new sequence's prompt chunk
        [(1, [46, 47, 48, 49]), (0, [6]), (2, [1, 300, 301, 302, 303, 304, 305])], // a third joins; segments not in slot order
        [(2, [8]), (1, [9])],                                       // sequence 0 has left (its slot 0 is cleared below)
        [(3, [1, 2, 3]), (2, [10]), (1, [11])],                     // sequence 3 reuses slot 0
        [(3, [12]), (2, [13])],
    ];

    private static readonly int[] SlotOf = [0, 1, 2, 0]; // sequence → slot (3 reuses 0 after 0 ended)

    /// <summary>Runs the script batched: returns per sequence the logits of its last token after each step it took part in.</summary>
    private static Dictionary<int, List<float[]>> Batched(LlamaContext context)
    {
        int vocab = context.VocabularySize;
        var result = new Dictionary<int, List<float[]>>();
        var logits = new float[context.Sequences * vocab];
        foreach (var step in Script)
        {
            if (step == Script[4]) context.ClearSequence(0); // sequence 0 ended: sequence 3 takes its slot
            var tokens = step.SelectMany(e => e.Tokens).ToArray();
            var sequences = step.Select(e => new BatchSequence(SlotOf[e.Sequence], e.Tokens.Length, WantsLogits: true)).ToArray();
            int rows = context.EvaluateBatch(tokens, sequences, logits);
            Assert.Equal(step.Length, rows);
            for (int i = 0; i < step.Length; i++)
                (result.TryGetValue(step[i].Sequence, out var list) ? list : result[step[i].Sequence] = []).Add(logits.AsSpan(i * vocab, vocab).ToArray());
        }
        return result;
    }

    /// <summary>Each sequence alone, in the same chunks, through the single-sequence <see cref="LlamaContext.Evaluate"/>.</summary>
    private static Dictionary<int, List<float[]>> Alone(LoadedModel model, ContextOptions options)
    {
        var result = new Dictionary<int, List<float[]>>();
        foreach (int sequence in Script.SelectMany(s => s).Select(e => e.Sequence).Distinct())
        {
            using var context = model.CreateContext(options);
            var logits = new float[context.VocabularySize];
            var list = result[sequence] = [];
            foreach (var step in Script)
                foreach (var (s, tokens) in step)
                    if (s == sequence) { context.Evaluate(tokens, logits); list.Add(logits.ToArray()); }
        }
        return result;
    }

    private static readonly ContextOptions Options = new(ContextSize: 32, BatchSize: 16, KvCacheType: GgmlType.F16);

    /// <summary>
    /// Every weight type, bit for bit: the script's steps put 1 to 12 rows through each matmul (the one-token kernels, the
    /// multi-token kernels and, from 8 rows on, the repacked GEMM) while each sequence alone sees other counts, and a
    /// sequence's rows sit at different positions of the batch from step to step.
    /// </summary>
    [Theory]
    [InlineData(SyntheticWeightType.F32)]
    [InlineData(SyntheticWeightType.F16)]
    [InlineData(SyntheticWeightType.BF16)]
    [InlineData(SyntheticWeightType.Q8_0)]
    [InlineData(SyntheticWeightType.Q4_0)]
    [InlineData(SyntheticWeightType.Q4_K)]
    [InlineData(SyntheticWeightType.Q5_K)]
    [InlineData(SyntheticWeightType.Q6_K)]
    [InlineData(SyntheticWeightType.Q4_K_M)]
    public void Each_sequence_in_a_batch_gets_the_logits_it_gets_alone(SyntheticWeightType type) => BatchedEqualsAlone(type, Options);

    /// <summary>
    /// The same with a quantized KV cache (docs/batching.md#quantized-kv-cache): a token's cache row is quantized from its own
    /// k and v only (whole blocks of 32 within the row), and the slots' rows are read back through the same staging, so batching
    /// changes no bit.
    /// </summary>
    [Theory]
    [InlineData(SyntheticWeightType.Q8_0, GgmlType.Q8_0)]
    [InlineData(SyntheticWeightType.Q4_0, GgmlType.Q4_0)]
    [InlineData(SyntheticWeightType.Q4_K_M, GgmlType.Q8_0)]
    [InlineData(SyntheticWeightType.F16, GgmlType.Q4_0)]
    public void Each_sequence_in_a_batch_gets_the_logits_it_gets_alone_with_a_quantized_cache(SyntheticWeightType type, GgmlType kv)
        => BatchedEqualsAlone(type, Options with { KvCacheType = kv });

    private void BatchedEqualsAlone(SyntheticWeightType type, ContextOptions options)
    {
        var cpu = CpuTestBackend.Device;
        using var model = LoadedModel.Load(Model(type), new ModelLoadOptions(cpu, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance);
        var alone = Alone(model, options);
        using var context = model.CreateContext(options, sequences: 3);
        var batched = Batched(context);
        foreach (var (sequence, expected) in alone)
        {
            Assert.Equal(expected.Count, batched[sequence].Count);
            for (int i = 0; i < expected.Count; i++)
            {
                int differing = 0, first = -1;
                for (int j = 0; j < expected[i].Length; j++)
                    if (BitConverter.SingleToInt32Bits(expected[i][j]) != BitConverter.SingleToInt32Bits(batched[sequence][i][j]) && differing++ == 0) first = j;
                Assert.True(differing == 0, $"{type}, KV {options.KvCacheType}: sequence {sequence}, call {i}: {differing} logits differ from the sequence alone, " +
                    $"the first {first}: {(first < 0 ? 0 : batched[sequence][i][first]):R} batched, {(first < 0 ? 0 : expected[i][first]):R} alone");
            }
        }
        Assert.Equal(3 + 4 + 1 + 1, context.SequencePosition(1));
        Assert.Equal(4, context.SequencePosition(0)); // sequence 3: 3 + 1
    }

    [Theory]
    [InlineData("GetRows,MatMul", GgmlType.F16)]                                  // everything else on the CPU (with copies)
    [InlineData("GetRows,MatMul,RmsNorm,SiluMul,Add,Convert,Attention", GgmlType.F16)] // no Rope: rope per segment on the CPU
    [InlineData("GetRows,MatMul,RmsNorm,Rope,SiluMul,Add", GgmlType.F32)]        // no Attention: the KV slots live on the CPU
    [InlineData("GetRows,MatMul,RmsNorm,Rope,SiluMul,Add,Convert,Attention", GgmlType.Q8_0, true)] // Attention for F32/F16 only, as
    [InlineData("GetRows,MatMul,RmsNorm,Rope,SiluMul,Add,Convert,Attention", GgmlType.Q4_0, true)] // a GPU: quantized slots on the CPU
    public void Op_fallback_gives_the_cpu_batches_bit_for_bit(string ops, GgmlType kv, bool floatCachesOnly = false)
    {
        var cpu = CpuTestBackend.Device;
        var partial = new PartialDevice(cpu, ops.Split(',').Select(Enum.Parse<ComputeOp>).ToHashSet(), cacheTypes: floatCachesOnly ? [GgmlType.F32, GgmlType.F16] : null);
        var options = Options with { KvCacheType = kv };
        Dictionary<int, List<float[]>> expected, actual;
        using (var model = LoadedModel.Load(Model(SyntheticWeightType.Q8_0), new ModelLoadOptions(cpu, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance, cancellation: TestContext.Current.CancellationToken))
        using (var context = model.CreateContext(options, sequences: 3))
            expected = Batched(context);
        using (var model = LoadedModel.Load(Model(SyntheticWeightType.Q8_0), new ModelLoadOptions(partial, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance, cancellation: TestContext.Current.CancellationToken))
        using (var context = model.CreateContext(options, sequences: 3))
        {
            actual = Batched(context);
            Assert.NotEmpty(context.OpFallbackCounts);
        }
        foreach (var (sequence, rows) in expected)
            for (int i = 0; i < rows.Count; i++) Assert.Equal(rows[i], actual[sequence][i]);
    }

    [Fact]
    public void Partial_offload_batches_equal_the_cpu()
    {
        var cpu = CpuTestBackend.Device;
        var all = new PartialDevice(cpu, Enum.GetValues<ComputeOp>().ToHashSet());
        Dictionary<int, List<float[]>> expected, actual;
        using (var model = LoadedModel.Load(Model(SyntheticWeightType.Q8_0), new ModelLoadOptions(cpu, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance, cancellation: TestContext.Current.CancellationToken))
        using (var context = model.CreateContext(Options, sequences: 3))
            expected = Batched(context);
        using (var model = LoadedModel.Load(Model(SyntheticWeightType.Q8_0), new ModelLoadOptions(all, cpu, GpuLayers: 1, LoadOptions.Default), SystemMappingFactory.Instance, cancellation: TestContext.Current.CancellationToken))
        using (var context = model.CreateContext(Options, sequences: 3))
        {
            actual = Batched(context);
            Assert.True(context.Transfers.Copies > 0); // layer 1 and the output on the CPU: activations crossed devices
        }
        foreach (var (sequence, rows) in expected)
            for (int i = 0; i < rows.Count; i++) Assert.Equal(rows[i], actual[sequence][i]);
    }

    [Fact]
    public void Bad_batches_are_refused_before_anything_is_evaluated()
    {
        var cpu = CpuTestBackend.Device;
        using var model = LoadedModel.Load(Model(SyntheticWeightType.Q8_0), new ModelLoadOptions(cpu, cpu, GpuLayers: -1, LoadOptions.Default), SystemMappingFactory.Instance, cancellation: TestContext.Current.CancellationToken);
        using var context = model.CreateContext(Options, sequences: 2);
        var logits = new float[2 * context.VocabularySize];
        Assert.Throws<ArgumentOutOfRangeException>(() => context.EvaluateBatch([1, 2], [new BatchSequence(2, 2, true)], logits));
        Assert.Throws<ArgumentException>(() => context.EvaluateBatch([1, 2], [new BatchSequence(0, 1, true), new BatchSequence(0, 1, true)], logits));
        Assert.Throws<ArgumentException>(() => context.EvaluateBatch([1, 2, 3], [new BatchSequence(0, 2, true)], logits));
        Assert.Throws<ArgumentException>(() => context.EvaluateBatch(new int[17], [new BatchSequence(1, 17, false)], logits)); // > batch size
        context.EvaluateBatch(new int[15], [new BatchSequence(1, 15, false)], logits);
        context.EvaluateBatch(new int[15], [new BatchSequence(1, 15, false)], logits);
        var e = Assert.Throws<ContextOverflowException>(() => context.EvaluateBatch([1, 2, 3, 4], [new BatchSequence(0, 1, true), new BatchSequence(1, 3, true)], logits));
        Assert.Contains("slot 1", e.Message);
        Assert.Equal(0, context.SequencePosition(0)); // refused as a whole
        Assert.Equal(30, context.SequencePosition(1));
        context.ClearSequence(1);
        Assert.Equal(0, context.SequencePosition(1));
    }

    public void Dispose()
    {
        try { if (Directory.Exists(_folder)) Directory.Delete(_folder, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}

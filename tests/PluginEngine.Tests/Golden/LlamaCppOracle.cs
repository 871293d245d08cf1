using LLama;
using LLama.Common;
using LLama.Native;

namespace PluginEngine.Tests.Golden;

/// <summary>
/// llama.cpp (through LLamaSharp and its CPU native build) running a GGUF file, used as an independent oracle:
/// token ids go straight into a batch (no tokenizer), every position asks for logits, and the logits are read
/// back with <see cref="SafeLLamaContextHandle.GetLogitsIth"/>. CPU only, F16 KV cache (llama.cpp's default, and
/// this engine's), flash attention off so llama.cpp takes the plain softmax(QKᵀ)·V path this engine implements.
/// </summary>
public sealed class LlamaCppOracle : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly LLamaBatch _batch = new();

    private LlamaCppOracle(LLamaWeights weights, LLamaContext context)
    {
        _weights = weights;
        _context = context;
        VocabularySize = weights.Vocab.Count;
    }

    /// <summary>Tokens in the model's vocabulary, as llama.cpp read it.</summary>
    public int VocabularySize { get; }

    /// <summary>Positions already evaluated.</summary>
    public int Position { get; private set; }

    /// <summary>
    /// Opens <paramref name="path"/> with a context of <paramref name="contextSize"/> positions. Callers check
    /// <see cref="UnavailableReason"/> first (and skip); here an unavailable library is an InvalidOperationException.
    /// </summary>
    public static LlamaCppOracle Open(string path, uint contextSize)
    {
        if (UnavailableReason is { } why) throw new InvalidOperationException(why);
        var parameters = new ModelParams(path)
        {
            ContextSize = contextSize,
            BatchSize = contextSize,
            UBatchSize = contextSize,
            GpuLayerCount = 0,
            Threads = 1, // the spinning thread pool costs more than it saves on models this small
            BatchThreads = 1,
            FlashAttention = false,
            TypeK = GGMLType.GGML_TYPE_F16,
            TypeV = GGMLType.GGML_TYPE_F16,
        };
        var weights = LLamaWeights.LoadFromFile(parameters);
        try
        {
            return new LlamaCppOracle(weights, weights.CreateContext(parameters));
        }
        catch
        {
            weights.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Evaluates <paramref name="tokens"/> at the next positions in one batch and copies every position's logits
    /// into <paramref name="logits"/> ([tokens, V], row-major).
    /// </summary>
    public void Evaluate(ReadOnlySpan<int> tokens, Span<float> logits)
    {
        if (logits.Length != tokens.Length * VocabularySize)
            throw new ArgumentException($"logits must hold {tokens.Length} × {VocabularySize} values", nameof(logits));
        _batch.Clear();
        for (int i = 0; i < tokens.Length; i++)
            _batch.Add(tokens[i], Position + i, LLamaSeqId.Zero, true);
        var result = _context.NativeHandle.Decode(_batch);
        if (result != DecodeResult.Ok)
            throw new InvalidOperationException($"llama_decode of {tokens.Length} tokens at position {Position} returned {result}");
        Position += tokens.Length;
        for (int i = 0; i < tokens.Length; i++)
            _context.NativeHandle.GetLogitsIth(i).CopyTo(logits.Slice(i * VocabularySize, VocabularySize));
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }

    private static readonly Lazy<string?> NativeLoadFailure = new(LoadNative);

    /// <summary>
    /// Null when llama.cpp's native library is loaded and callable here; otherwise why not (the exception chain's
    /// messages), for <c>Assert.Skip</c>. Loads it on first call. Failures after this point (llama.cpp rejecting a
    /// model, a decode error) are real test failures, not skips.
    /// </summary>
    public static string? UnavailableReason => NativeLoadFailure.Value;

    /// <summary>
    /// llama.cpp logs every tensor it loads; keep test output readable. Best effort: LLamaSharp only accepts this
    /// before its library loads, and other tests in the process may have loaded it first.
    /// </summary>
    private static void QuietNativeLog()
    {
        if (NativeLibraryConfig.LLama.LibraryHasLoaded) return;
        try { NativeLibraryConfig.All.WithLogCallback((level, message) => { }); }
        catch (InvalidOperationException) { } // loaded in between: the log stays on, nothing else changes
    }

    private static string? LoadNative()
    {
        try
        {
            QuietNativeLog();
            NativeApi.llama_empty_call(); // forces LLamaSharp to pick and load the native build for this CPU
            return null;
        }
        catch (Exception e)
        {
            var messages = new List<string>();
            for (Exception? x = e; x is not null; x = x.InnerException) messages.Add($"{x.GetType().Name}: {x.Message}");
            return "llama.cpp native library (LLamaSharp.Backend.Cpu 0.30.0) could not be loaded: " + string.Join(" <- ", messages);
        }
    }
}

using System.Collections.Concurrent;
using PluginEngine.Core.Models;
using Xunit;

namespace PluginEngine.Tests.Golden;

/// <summary>The model shapes the golden tests run.</summary>
public enum GoldenShape
{
    /// <summary>d=256, 4 layers, 8 heads over 4 KV heads (GQA 2:1), ff 768, output tied to the token embeddings.</summary>
    TiedD256,
    /// <summary>d=512, 2 layers, 8 heads over 2 KV heads (GQA 4:1), ff 1280 (a multiple of 256, not of 512), separate output.</summary>
    SeparateD512,
}

/// <summary>
/// The golden test classes share one <see cref="GoldenModelFixture"/>, so each model file is generated once per run,
/// and run one after another: each of them already keeps every core busy (the CPU backend's pool, llama.cpp's threads).
/// </summary>
[CollectionDefinition(Name)]
public sealed class GoldenCollection : ICollectionFixture<GoldenModelFixture>
{
    public const string Name = "Golden models";
}

/// <summary>
/// Fixture of the golden tests: writes each (shape, weight type) model once, on first use, into a temp folder
/// deleted at the end, and keeps each model's decoded reference so it is built only once.
/// Models are small (vocabularies of about a thousand tokens) so the whole suite stays fast on a loaded machine.
/// </summary>
public sealed class GoldenModelFixture : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "pluginengine-golden-" + Guid.NewGuid().ToString("N"));
    private readonly ConcurrentDictionary<(GoldenShape, SyntheticWeightType), Lazy<string>> _files = new();
    private readonly ConcurrentDictionary<string, Lazy<ReferenceLlama>> _references = new();

    /// <summary>The generator's description of a shape at a weight type (fixed seeds: the files are identical on every run).</summary>
    public static SyntheticModelSpec Spec(GoldenShape shape, SyntheticWeightType type) => shape switch
    {
        GoldenShape.TiedD256 => new SyntheticModelSpec
        {
            Name = $"golden-tied-d256-{type}", VocabularySize = 1024, EmbeddingLength = 256, BlockCount = 4, HeadCount = 8,
            KvHeadCount = 4, FeedForwardLength = 768, ContextLength = 256, SeparateOutput = false, WeightType = type, Seed = 0x601D256,
        },
        GoldenShape.SeparateD512 => new SyntheticModelSpec
        {
            Name = $"golden-separate-d512-{type}", VocabularySize = 1000, EmbeddingLength = 512, BlockCount = 2, HeadCount = 8,
            KvHeadCount = 2, FeedForwardLength = 1280, ContextLength = 256, SeparateOutput = true, WeightType = type, Seed = 0x601D512,
        },
        _ => throw new ArgumentOutOfRangeException(nameof(shape), shape, "unknown golden shape"),
    };

    /// <summary>Path of the model file, generated on first request.</summary>
    public string PathFor(GoldenShape shape, SyntheticWeightType type)
        => _files.GetOrAdd((shape, type), key => new Lazy<string>(() =>
        {
            string path = Path.Combine(_folder, $"{key.Item1}-{key.Item2}.gguf");
            SyntheticModel.Write(Spec(key.Item1, key.Item2), path);
            return path;
        })).Value;

    /// <summary>The scalar reference of the model file, decoded once.</summary>
    public ReferenceLlama ReferenceFor(GoldenShape shape, SyntheticWeightType type)
    {
        string path = PathFor(shape, type);
        return _references.GetOrAdd(path, p => new Lazy<ReferenceLlama>(() => ReferenceLlama.Load(p))).Value;
    }

    public void Dispose()
    {
        try { if (Directory.Exists(_folder)) Directory.Delete(_folder, recursive: true); }
        catch (IOException) { } // best effort: a leftover temp folder must not fail the run
        catch (UnauthorizedAccessException) { }
    }
}

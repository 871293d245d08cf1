using System.IO.Compression;
using System.Text;
using System.Text.Json;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Tests.TokenizerTests;

/// <summary>Loads the real vocabularies in tests/data/tokenizers (see SOURCE.md there) and their known tokenizations.</summary>
internal static class TokenizerTestData
{
    public static string Folder => Path.Combine(AppContext.BaseDirectory, "data", "tokenizers");

    private static readonly Lazy<TokenizerVocabulary> LazyLlama2 = new(() => LoadSentencePiece("llama2"));
    private static readonly Lazy<TokenizerVocabulary> LazyMistral = new(() => LoadSentencePiece("mistral"));
    private static readonly Lazy<TokenizerVocabulary> LazyLlama3 = new(LoadLlama3);
    private static readonly Lazy<ITokenizer> LazyLlama2Tokenizer = new(() => Tokenizer.Create(Llama2));
    private static readonly Lazy<ITokenizer> LazyMistralTokenizer = new(() => Tokenizer.Create(Mistral));
    private static readonly Lazy<ITokenizer> LazyLlama3Tokenizer = new(() => Tokenizer.Create(Llama3));
    private static readonly Lazy<JsonDocument> LazyKnown = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(Folder, "known-tokenizations.json"))));

    public static TokenizerVocabulary Llama2 => LazyLlama2.Value;
    public static TokenizerVocabulary Mistral => LazyMistral.Value;
    public static TokenizerVocabulary Llama3 => LazyLlama3.Value;
    public static ITokenizer Llama2Tokenizer => LazyLlama2Tokenizer.Value;
    public static ITokenizer MistralTokenizer => LazyMistralTokenizer.Value;
    public static ITokenizer Llama3Tokenizer => LazyLlama3Tokenizer.Value;

    public static ITokenizer ByName(string name) => name switch
    {
        "llama2" => Llama2Tokenizer,
        "mistral" => MistralTokenizer,
        "llama3" => Llama3Tokenizer,
        _ => throw new ArgumentException(name),
    };

    /// <summary>The expected (text, ids) pairs copied from the package's own test suite.</summary>
    public static IEnumerable<(string Text, int[] Ids)> Known(string vocabulary)
    {
        foreach (JsonElement item in LazyKnown.Value.RootElement.GetProperty(vocabulary).EnumerateArray())
        {
            yield return (item.GetProperty("text").GetString()!, item.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray());
        }
    }

    /// <summary>Reads a gzip text file split on '\n' only (SentencePiece pieces may contain a raw '\r').</summary>
    private static string[] ReadLines(string fileName)
    {
        using var file = File.OpenRead(Path.Combine(Folder, fileName));
        using var gzip = new GZipStream(file, CompressionMode.Decompress);
        using var reader = new StreamReader(gzip, Encoding.UTF8);
        string all = reader.ReadToEnd();
        return all.EndsWith('\n') ? all[..^1].Split('\n') : all.Split('\n');
    }

    private static (string[] Tokens, float[] Scores, int[] Types) ReadVocab(string name)
    {
        string[] lines = ReadLines(name + ".vocab.tsv.gz");
        var tokens = new string[lines.Length];
        var scores = new float[lines.Length];
        var types = new int[lines.Length];
        for (int i = 0; i < lines.Length; i++)
        {
            string[] parts = lines[i].Split('\t', 3);
            types[i] = int.Parse(parts[0]);
            scores[i] = float.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture);
            tokens[i] = parts[2];
        }
        return (tokens, scores, types);
    }

    private static TokenizerVocabulary LoadSentencePiece(string name)
    {
        var (tokens, scores, types) = ReadVocab(name);
        return new TokenizerVocabulary
        {
            Model = TokenizerModelKind.SentencePiece,
            PreTokenizer = "default",
            Tokens = tokens,
            Scores = scores,
            TokenTypes = types,
            UnknownTokenId = 0,
            BosTokenId = 1,
            EosTokenId = 2,
            AddBos = true,
            AddSpacePrefix = true,
        };
    }

    private static TokenizerVocabulary LoadLlama3()
    {
        var (tokens, _, types) = ReadVocab("llama3");
        return new TokenizerVocabulary
        {
            Model = TokenizerModelKind.ByteLevelBpe,
            PreTokenizer = "llama-bpe",
            Tokens = tokens,
            TokenTypes = types,
            Merges = ReadLines("llama3.merges.txt.gz"),
            BosTokenId = 128000,
            EosTokenId = 128001,
            AddBos = true,
        };
    }
}

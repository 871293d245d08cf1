using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

public class TokenizerVocabularyTests
{
    private static Dictionary<string, object?> SentencePieceMetadata() => new()
    {
        [TokenizerMetadataKeys.Model] = "llama",
        [TokenizerMetadataKeys.Tokens] = new List<object> { "<unk>", "<s>", "</s>", "▁", "a", "▁a" },
        [TokenizerMetadataKeys.Scores] = new float[] { 0, 0, 0, -1, -2, -3 },
        [TokenizerMetadataKeys.TokenTypes] = new int[] { 2, 3, 3, 1, 1, 1 },
        [TokenizerMetadataKeys.BosTokenId] = 1u,
        [TokenizerMetadataKeys.EosTokenId] = 2u,
    };

    private static TokenizerVocabulary From(Dictionary<string, object?> metadata) =>
        TokenizerVocabulary.FromMetadata(key => metadata.GetValueOrDefault(key), "model.gguf");

    [Fact]
    public void Reads_gguf_metadata_with_llama_defaults_for_absent_keys()
    {
        TokenizerVocabulary vocabulary = From(SentencePieceMetadata());
        Assert.Equal(TokenizerModelKind.SentencePiece, vocabulary.Model);
        Assert.Equal(6, vocabulary.Tokens.Length);
        Assert.Equal(1, vocabulary.BosTokenId);
        Assert.Equal(0, vocabulary.UnknownTokenId);
        Assert.True(vocabulary.AddBos);
        Assert.True(vocabulary.AddSpacePrefix);
        Assert.Equal([1, 5], Tokenizer.Create(vocabulary).Encode("a", addBos: true, parseSpecial: false));
    }

    [Fact]
    public void Explicit_flags_override_the_defaults()
    {
        var metadata = SentencePieceMetadata();
        metadata[TokenizerMetadataKeys.AddBosToken] = false;
        metadata[TokenizerMetadataKeys.AddSpacePrefix] = false;
        metadata[TokenizerMetadataKeys.AddEosToken] = true;
        TokenizerVocabulary vocabulary = From(metadata);
        Assert.Equal([4, 2], Tokenizer.Create(vocabulary).Encode("a", addBos: true, parseSpecial: false));
    }

    [Theory]
    [InlineData(TokenizerMetadataKeys.Tokens, null, "missing")]
    [InlineData(TokenizerMetadataKeys.Model, null, "missing")]
    [InlineData(TokenizerMetadataKeys.Scores, "scores-short", "has 2 entries")]
    [InlineData(TokenizerMetadataKeys.TokenTypes, "types-bad", "[1] = 9")]
    [InlineData(TokenizerMetadataKeys.BosTokenId, "id-out-of-range", "= 600")]
    [InlineData(TokenizerMetadataKeys.Tokens, "not-strings", "[1] is a Int32")]
    public void Bad_metadata_is_reported_with_the_file_and_key(string key, string? variant, string detail)
    {
        var metadata = SentencePieceMetadata();
        metadata[key] = variant switch
        {
            null => null,
            "scores-short" => new float[] { 0, 0 },
            "types-bad" => new int[] { 2, 9, 3, 1, 1, 1 },
            "id-out-of-range" => 600u,
            "not-strings" => new object[] { "a", 5 },
            _ => throw new ArgumentException(variant),
        };
        var error = Assert.ThrowsAny<Exception>(() => From(metadata));
        Assert.True(error is TokenizerDataException, error.ToString());
        Assert.Contains("model.gguf", error.Message);
        Assert.Contains(key, error.Message);
        Assert.Contains(detail, error.Message);
    }

    [Fact]
    public void Unsupported_model_and_malformed_merges_are_named()
    {
        var metadata = SentencePieceMetadata();
        metadata[TokenizerMetadataKeys.Model] = "bert";
        var unsupported = Assert.Throws<TokenizerDataException>(() => From(metadata));
        Assert.Contains("'bert'", unsupported.Message);
        Assert.Equal(TokenizerMetadataKeys.Model, unsupported.Key);

        var bpe = new TokenizerVocabulary
        {
            Model = TokenizerModelKind.ByteLevelBpe,
            PreTokenizer = "gpt-2",
            Tokens = ["a", "b", "ab"],
            Merges = ["a b", "ab"],
        };
        var malformed = Assert.Throws<TokenizerDataException>(() => Tokenizer.Create(bpe));
        Assert.Equal(TokenizerMetadataKeys.Merges, malformed.Key);
        Assert.Contains($"'{TokenizerMetadataKeys.Merges}'[1]", malformed.Message);
    }

    [Fact]
    public void Byte_level_vocabulary_from_metadata_uses_its_merges_by_rank()
    {
        // Bytes 'a','b','c' map to themselves; rank decides "ab"+"c" over "a"+"bc".
        var metadata = new Dictionary<string, object?>
        {
            [TokenizerMetadataKeys.Model] = "gpt2",
            [TokenizerMetadataKeys.PreTokenizer] = "qwen2",
            [TokenizerMetadataKeys.Tokens] = new[] { "a", "b", "c", "ab", "bc", "abc", "<|end|>" },
            [TokenizerMetadataKeys.TokenTypes] = new[] { 1, 1, 1, 1, 1, 1, 3 },
            [TokenizerMetadataKeys.Merges] = new[] { "a b", "b c", "ab c" },
            [TokenizerMetadataKeys.EosTokenId] = 6u,
        };
        TokenizerVocabulary vocabulary = From(metadata);
        Assert.False(vocabulary.AddBos);
        ITokenizer tokenizer = Tokenizer.Create(vocabulary);
        Assert.Equal([5], tokenizer.Encode("abc", addBos: true, parseSpecial: false));
        Assert.Equal([3, 6, 4], tokenizer.Encode("ab<|end|>bc", addBos: false, parseSpecial: true));
    }
}

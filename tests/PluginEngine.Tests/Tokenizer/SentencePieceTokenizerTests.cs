using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

public class SentencePieceTokenizerTests
{
    private static ITokenizer Llama2 => TokenizerTestData.Llama2Tokenizer;

    [Fact]
    public void Characters_missing_from_the_vocabulary_fall_back_to_their_utf8_bytes()
    {
        // 🦙 = F0 9F A6 99; byte token <0xNN> has id NN + 3 in the Llama 2 vocabulary.
        int[] ids = Llama2.Encode("🦙", addBos: false, parseSpecial: false);
        Assert.Equal([29871, 0xF0 + 3, 0x9F + 3, 0xA6 + 3, 0x99 + 3], ids);
        Assert.All(ids.Skip(1), id => Assert.Equal(TokenType.Byte, Llama2.GetTokenType(id)));
        Assert.Equal([(byte)0xF0], Llama2.TokenPiece(0xF0 + 3).ToArray());
    }

    [Fact]
    public void Space_prefix_is_added_at_the_start_and_after_special_tokens_only()
    {
        Assert.Equal([1, 15043], Llama2.Encode("Hello", addBos: true, parseSpecial: false));
        // "<s>Hello</s>Hello": after each special token the text gets the dummy space again.
        int[] ids = Llama2.Encode("<s>Hello</s>Hello", addBos: false, parseSpecial: true);
        Assert.Equal([1, 15043, 2, 15043], ids);
        ITokenizer noPrefix = Tokenizer.Create(TokenizerTestData.Llama2 with { AddSpacePrefix = false });
        Assert.Equal([10994], noPrefix.Encode("Hello", addBos: false, parseSpecial: false));
        Assert.Equal("Hello", noPrefix.Decode([10994]));
    }

    [Fact]
    public void Control_tokens_are_text_unless_special_tokens_are_parsed()
    {
        int[] asText = Llama2.Encode("<s>", addBos: false, parseSpecial: false);
        Assert.DoesNotContain(1, asText);
        Assert.Equal("<s>", Llama2.Decode(asText));
        Assert.Equal([1], Llama2.Encode("<s>", addBos: false, parseSpecial: true));
        Assert.Equal([0], Llama2.Encode("<unk>", addBos: false, parseSpecial: true));
    }

    [Fact]
    public void User_defined_tokens_are_always_matched_whole()
    {
        string[] tokens = (string[])TokenizerTestData.Llama2.Tokens.Clone();
        int[] types = (int[])TokenizerTestData.Llama2.TokenTypes!.Clone();
        tokens[31999] = "<tool>";
        types[31999] = (int)TokenType.UserDefined;
        ITokenizer tokenizer = Tokenizer.Create(TokenizerTestData.Llama2 with { Tokens = tokens, TokenTypes = types });
        int[] ids = tokenizer.Encode("a<tool>b", addBos: false, parseSpecial: false);
        Assert.Contains(31999, ids);
        Assert.Equal("a<tool>b", tokenizer.Decode(ids));
    }

    [Fact]
    public void Equal_scores_merge_leftmost_first()
    {
        // Whitespace-run pieces all score -1e9: eleven spaces + the prefix space must become one 11-space piece
        // followed by "▁gr…", not pieces split from the right.
        Assert.Equal([1, 9651, 2646, 1327, 287], Llama2.Encode("           grabbed", addBos: true, parseSpecial: false));
    }

    [Fact]
    public void Unknown_token_is_used_when_a_character_has_no_piece_and_no_byte_token()
    {
        string[] tokens = ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a"];
        var vocabulary = new TokenizerVocabulary
        {
            Model = TokenizerModelKind.SentencePiece,
            Tokens = tokens,
            Scores = [0, 0, 0, -1, -2, -3, -4],
            TokenTypes = [2, 3, 3, 1, 1, 1, 1],
            UnknownTokenId = 0, BosTokenId = 1, EosTokenId = 2, AddBos = true, AddSpacePrefix = true,
        };
        ITokenizer tokenizer = Tokenizer.Create(vocabulary);
        Assert.Equal([1, 6, 0, 5], tokenizer.Encode("aéb", addBos: true, parseSpecial: false));
        Assert.Equal("a\uFFFDb", tokenizer.Decode([1, 6, 0, 5]));
        Assert.Equal("a<unk>b", tokenizer.Decode([6, 0, 5], renderSpecial: true));
    }
}

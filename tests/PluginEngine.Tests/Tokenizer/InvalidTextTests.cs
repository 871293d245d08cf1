using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

/// <summary>
/// Input is a .NET string, so it cannot hold invalid UTF-8 but can hold lone surrogates: those encode as U+FFFD
/// (what UTF-8 conversion gives llama.cpp too). Token bytes can be invalid UTF-8: decoding turns them into U+FFFD.
/// </summary>
public class InvalidTextTests
{
    public static TheoryData<string> Vocabularies() => new("llama2", "llama3");

    [Theory]
    [MemberData(nameof(Vocabularies))]
    public void Lone_surrogates_encode_as_the_replacement_character(string vocabulary)
    {
        ITokenizer tokenizer = TokenizerTestData.ByName(vocabulary);
        Assert.Equal(tokenizer.Encode("a\uFFFDb", true, false), tokenizer.Encode("a\uD800b", true, false));
        Assert.Equal(tokenizer.Encode("\uFFFD", true, false), tokenizer.Encode("\uDC00", true, false));
        Assert.Equal(tokenizer.Encode("x\uFFFD", true, false), tokenizer.Encode("x\uDBFF", true, false));
        Assert.Equal("a\uFFFDb", tokenizer.Decode(tokenizer.Encode("a\uD800b", true, false)));
    }

    [Fact]
    public void Invalid_byte_sequences_from_tokens_decode_to_replacement_characters()
    {
        ITokenizer llama2 = TokenizerTestData.Llama2Tokenizer;
        int Byte(int b) => b + 3;
        Assert.Equal("\uFFFD", llama2.Decode([Byte(0x80)]));                            // lone continuation byte
        Assert.Equal("a\uFFFDb", llama2.Decode([Byte('a'), Byte(0xF0), Byte(0x9F), Byte('b')])); // truncated 4-byte sequence
        Assert.Equal("\uFFFD\uFFFD", llama2.Decode([Byte(0xC0), Byte(0xAF)]));          // overlong encoding

        ITokenizer llama3 = TokenizerTestData.Llama3Tokenizer;
        int[] llama = llama3.Encode("🦙", false, false); // three tokens: F0 9F | A6 | 99 split over tokens
        Assert.Equal(3, llama.Length);
        Assert.Equal("\uFFFD", llama3.Decode(llama[..1]));
        Assert.Equal("🦙", llama3.Decode(llama));
    }

    [Fact]
    public void Token_ids_outside_the_vocabulary_are_rejected_with_the_id()
    {
        ITokenizer tokenizer = TokenizerTestData.Llama2Tokenizer;
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([5, 32000]));
        Assert.Contains("32000", error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.TokenPiece(-1).Length);
    }
}

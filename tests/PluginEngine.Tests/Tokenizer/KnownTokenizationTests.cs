using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

/// <summary>Expected ids from the npm packages' own tests, which were produced with the original tokenizers.</summary>
public class KnownTokenizationTests
{
    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (string vocabulary in new[] { "llama2", "mistral", "llama3" })
        {
            int index = 0;
            foreach (var _ in TokenizerTestData.Known(vocabulary))
            {
                data.Add(vocabulary, index++);
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Encodes_like_the_reference_tokenizer_and_decodes_back(string vocabulary, int caseIndex)
    {
        var (text, expected) = TokenizerTestData.Known(vocabulary).ElementAt(caseIndex);
        ITokenizer tokenizer = TokenizerTestData.ByName(vocabulary);
        // Llama 2 / Mistral cases include BOS; the Llama 3 package tests encode without BOS/EOS and with special tokens.
        bool sentencePiece = vocabulary != "llama3";
        int[] actual = tokenizer.Encode(text, addBos: sentencePiece, parseSpecial: !sentencePiece);
        Assert.Equal(expected, actual);
        Assert.Equal(text, tokenizer.Decode(actual, renderSpecial: !sentencePiece));
    }

    [Fact]
    public void Llama3_matches_real_special_tokens_and_treats_lookalikes_as_text()
    {
        string[] real = ["<|reserved_special_token_0|>", "<|reserved_special_token_9|>", "<|reserved_special_token_10|>",
            "<|reserved_special_token_19|>", "<|reserved_special_token_53|>", "<|reserved_special_token_99|>",
            "<|reserved_special_token_100|>", "<|reserved_special_token_178|>", "<|reserved_special_token_199|>",
            "<|reserved_special_token_200|>", "<|reserved_special_token_246|>", "<|reserved_special_token_247|>"];
        string[] lookalikes = ["<|reserved_special_token_00|>", "<|reserved_special_token_09|>", "<|reserved_special_token_010|>",
            "<|reserved_special_token_251|>", "<|reserved_special_token_666|>", "<|reserved_special_token_248|>",
            "<|reserved_special_token_249|>", "<|reserved_special_token_250|>"];
        int[] expected = [128002, 128017, 128018, 128027, 128061, 128107, 128108, 128186, 128207, 128208, 128254, 128255,
            27, 91, 52202, 42729, 6594, 62, 410, 91, 1822, 91, 52202, 42729, 6594, 62, 2545, 91, 1822, 91, 52202, 42729, 6594, 62,
            7755, 91, 1822, 91, 52202, 42729, 6594, 62, 13860, 91, 1822, 91, 52202, 42729, 6594, 62, 10943, 91, 1822, 91, 52202,
            42729, 6594, 62, 14185, 91, 1822, 91, 52202, 42729, 6594, 62, 14735, 91, 1822, 91, 52202, 42729, 6594, 62, 5154, 91, 29];
        string text = string.Concat(real) + string.Concat(lookalikes);
        int[] actual = TokenizerTestData.Llama3Tokenizer.Encode(text, addBos: false, parseSpecial: true);
        Assert.Equal(expected, actual);
        Assert.Equal(text, TokenizerTestData.Llama3Tokenizer.Decode(actual, renderSpecial: true));
    }

    [Fact]
    public void Llama3_adds_bos_when_asked_and_eos_only_when_the_vocabulary_says_so()
    {
        ITokenizer tokenizer = TokenizerTestData.Llama3Tokenizer;
        Assert.Equal([128000, 40], tokenizer.Encode("I", addBos: true, parseSpecial: false));
        Assert.Equal([40], tokenizer.Encode("I", addBos: false, parseSpecial: false));
        Assert.Equal([128000], tokenizer.Encode("", addBos: true, parseSpecial: false));
        ITokenizer withEos = Tokenizer.Create(TokenizerTestData.Llama3 with { AddEos = true });
        Assert.Equal([128000, 40, 128001], withEos.Encode("I", addBos: true, parseSpecial: false));
    }

    [Fact]
    public void Llama3_decodes_control_tokens_only_when_rendering_special_tokens()
    {
        ITokenizer tokenizer = TokenizerTestData.Llama3Tokenizer;
        int[] ids = [128000, 2028, 374, 264, 1296, 11914, 13, 128001];
        Assert.Equal("<|begin_of_text|>This is a test sentence.<|end_of_text|>", tokenizer.Decode(ids, renderSpecial: true));
        Assert.Equal("This is a test sentence.", tokenizer.Decode(ids));
        Assert.Equal("<|python_tag|>", tokenizer.Decode([128010], renderSpecial: true));
    }

    [Fact]
    public void Llama2_decode_drops_bos_and_the_space_prefix()
    {
        ITokenizer tokenizer = TokenizerTestData.Llama2Tokenizer;
        Assert.Equal("grabbed", tokenizer.Decode([1, 2646, 1327, 287]));
        Assert.Equal("grabbed", tokenizer.Decode([2646, 1327, 287]));
        Assert.Equal("<s>grabbed", tokenizer.Decode([1, 2646, 1327, 287], renderSpecial: true));
        Assert.Equal(" grabbed", tokenizer.Decode([29871, 2646, 1327, 287]));
    }
}

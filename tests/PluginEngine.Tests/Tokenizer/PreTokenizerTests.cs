using System.Text;
using System.Text.RegularExpressions;
using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

public class PreTokenizerTests
{
    // The reference patterns (llama.cpp / Hugging Face tokenizer.json). .NET Regex classifies UTF-16 code units, so it
    // is an exact reference only for text without supplementary-plane characters.
    private const string Llama3Pattern = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Qwen2Pattern = @"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static string[] Split(string text, PreTokenizerKind kind)
    {
        var words = new List<Range>();
        PreTokenizerRules.Split(text, kind, words);
        return words.Select(r => text[r]).ToArray();
    }

    [Theory]
    [InlineData("Hello world", new[] { "Hello", " world" })]
    [InlineData("a   b", new[] { "a", "  ", " b" })]
    [InlineData("a   ", new[] { "a", "   " })]
    [InlineData("x \n\n  y", new[] { "x", " \n\n", " ", " y" })]
    [InlineData("12345678", new[] { "123", "456", "78" })]
    [InlineData("I'M here", new[] { "I", "'M", " here" })]
    [InlineData("\tword", new[] { "\tword" })]
    [InlineData("a!!\n\nb", new[] { "a", "!!\n\n", "b" })]
    [InlineData("🦙 llama", new[] { "🦙", " llama" })]
    [InlineData("𠀀𠀁x", new[] { "𠀀𠀁x" })]
    [InlineData("你好，世界", new[] { "你好", "，世界" })]
    public void Llama3_rules(string text, string[] expected) => Assert.Equal(expected, Split(text, PreTokenizerKind.Llama3));

    [Theory]
    [InlineData("12345", new[] { "1", "2", "3", "4", "5" })]
    [InlineData("ab 42", new[] { "ab", " ", "4", "2" })]
    public void Qwen2_rules(string text, string[] expected) => Assert.Equal(expected, Split(text, PreTokenizerKind.Qwen2));

    [Theory]
    [InlineData("Hello world", new[] { "Hello", " world" })]
    [InlineData("I'M it's", new[] { "I", "'", "M", " it", "'s" })]
    [InlineData(" 12345 x", new[] { " 12345", " x" })]
    [InlineData("a \n\n b", new[] { "a", " \n\n", " b" })]
    [InlineData("\tword", new[] { "\t", "word" })]
    public void Gpt2_rules(string text, string[] expected) => Assert.Equal(expected, Split(text, PreTokenizerKind.Gpt2));

    [Theory]
    [InlineData("a 12b", new[] { "a", " ", "1", "2", "b" })]
    public void Gpt2_single_digit_rules(string text, string[] expected) => Assert.Equal(expected, Split(text, PreTokenizerKind.Gpt2SingleDigits));

    [Theory]
    [InlineData(PreTokenizerKind.Llama3, Llama3Pattern)]
    [InlineData(PreTokenizerKind.Qwen2, Qwen2Pattern)]
    [InlineData(PreTokenizerKind.Gpt2, Gpt2Pattern)]
    public void Matches_the_reference_regex_on_random_bmp_text(PreTokenizerKind kind, string pattern)
    {
        var regex = new Regex(pattern, RegexOptions.CultureInvariant);
        string alphabet = "  \t\n\r\u00a0\u3000'sStTrReEvVmMlLdD.,!?-_()#$<>|aZéßж你镇한ا\u0301\u0902012٣½Ⅻ\u200d\u0000\u007f";
        var random = new Random(2024);
        for (int round = 0; round < 3000; round++)
        {
            var builder = new StringBuilder();
            int length = random.Next(1, 30);
            for (int i = 0; i < length; i++)
            {
                builder.Append(alphabet[random.Next(alphabet.Length)]);
            }
            string text = builder.ToString();
            string[] expected = regex.Matches(text).Select(m => m.Value).ToArray();
            Assert.Equal(text, string.Concat(expected)); // the patterns cover every character
            Assert.Equal(expected, Split(text, kind));
        }
    }

    [Fact]
    public void Unknown_pre_tokenizer_names_are_rejected_with_the_name()
    {
        var error = Assert.Throws<NotSupportedException>(() => PreTokenizerRules.ForName("mystery-bpe"));
        Assert.Contains("mystery-bpe", error.Message);
        Assert.Contains(TokenizerMetadataKeys.PreTokenizer, error.Message);
    }
}

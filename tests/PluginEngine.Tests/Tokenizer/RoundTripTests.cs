using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

/// <summary>Decode(Encode(s)) == s for text that contains no special-token spellings and no lone surrogates.</summary>
public class RoundTripTests
{
    public static readonly string[] Texts =
    [
        "", " ", "  ", "     ", "\n", "\n\n\n", " \n ", "\t", "\t\t\tx", "\r\n", "a \r\n\r\n b", "x  y   z    ", "  two leading", "trailing two  ",
        "Hello world", "hello\nworld", "tabs\tand\tnewlines\n", "I'm sure they'll say it's fine, we've seen it'd work",
        "0", "7", "42", "123", "1234", "9876543210", " 3.14", "1,000,000.00", "x=12345*678", "٣٤٥", "²³½",
        "🦙", "🦙🦙", "👍🏽👍🏿", "👨‍👩‍👧‍👦 family", "🇯🇵", "emoji 😀 in 😃 text 😄",
        "镇", "你好，世界！", "日本語のテキスト", "한국어", "中文English混合", "𠀀𠀁𪚥 (CJK extension B)", "𝐀𝐁𝐂 math letters",
        "Привет", "Ελληνικά", "עברית", "مرحبا", "हिन्दी", "ไทย", "Tiếng Việt", "e\u0301", "ﬁ", "ẞß",
        "mixed: English, Русский, 中文, العربية, 🦙, 123",
        "    def f(x):\n        return x ** 2\n", "<div class=\"x\">&amp;</div>", "SELECT * FROM t WHERE a <> 'b';",
        "\u00a0\u2009\u3000 odd spaces", "zero\u200bwidth\u200djoiner", "\u0001\u001f\u007f controls",
        "A very long line " + string.Concat(Enumerable.Repeat("with many repeated words ", 50)),
        new string(' ', 100) + "x" + new string('\n', 30) + new string('9', 40),
    ];

    public static TheoryData<string> Vocabularies() => new("llama2", "mistral", "llama3");

    [Theory]
    [MemberData(nameof(Vocabularies))]
    public void Decode_of_encode_gives_the_text_back(string vocabulary)
    {
        ITokenizer tokenizer = TokenizerTestData.ByName(vocabulary);
        foreach (string text in Texts.Concat(LlamaCppOracleTests.RandomStrings(seed: 99, count: 500).Where(t => !t.Contains('<'))))
        {
            foreach (bool addBos in new[] { false, true })
            {
                int[] ids = tokenizer.Encode(text, addBos, parseSpecial: false);
                Assert.Equal(text, tokenizer.Decode(ids));
            }
        }
    }

    [Theory]
    [MemberData(nameof(Vocabularies))]
    public void Special_token_text_round_trips_when_parsed_and_rendered(string vocabulary)
    {
        ITokenizer tokenizer = TokenizerTestData.ByName(vocabulary);
        string text = vocabulary == "llama3"
            ? "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
            : "<s>Question: why?</s><s> Answer: because</s>";
        int[] ids = tokenizer.Encode(text, addBos: false, parseSpecial: true);
        Assert.Equal(text, tokenizer.Decode(ids, renderSpecial: true));
    }

    [Fact]
    public void Long_prompt_encodes_and_round_trips()
    {
        // 200k characters of varied text: exercises the word cache and the O(n log n) SentencePiece merge.
        string text = string.Concat(Enumerable.Range(0, 4000).Select(i => $"Line {i}: the llama 🦙 ate {i * 37 % 1000} 镇 leaves.  \n"));
        foreach (string vocabulary in new[] { "llama2", "llama3" })
        {
            ITokenizer tokenizer = TokenizerTestData.ByName(vocabulary);
            int[] ids = tokenizer.Encode(text, addBos: true, parseSpecial: false);
            Assert.True(ids.Length > text.Length / 8);
            Assert.Equal(text, tokenizer.Decode(ids));
        }
    }

    [Fact]
    public void Concurrent_encoding_gives_the_same_ids_as_sequential_encoding()
    {
        ITokenizer[] tokenizers = [TokenizerTestData.Llama2Tokenizer, TokenizerTestData.Llama3Tokenizer];
        string[] texts = LlamaCppOracleTests.RandomStrings(seed: 5, count: 400).ToArray();
        foreach (ITokenizer tokenizer in tokenizers)
        {
            int[][] sequential = texts.Select(t => tokenizer.Encode(t, true, true)).ToArray();
            int[][] parallel = new int[texts.Length][];
            Parallel.For(0, texts.Length, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i => parallel[i] = tokenizer.Encode(texts[i], true, true));
            for (int i = 0; i < texts.Length; i++)
            {
                Assert.Equal(sequential[i], parallel[i]);
            }
        }
    }
}

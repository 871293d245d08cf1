using System.Text;
using LLama;
using LLama.Common;
using LLama.Exceptions;
using LLama.Native;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

/// <summary>
/// Compares token ids with llama.cpp's own tokenizer (LLamaSharp 0.30.0 + its CPU backend): each real vocabulary is
/// written as a vocab-only GGUF with llama-architecture metadata, loaded with <c>VocabOnly = true</c>, and a corpus of
/// tricky strings plus seeded random strings is tokenized by both. If the native library cannot load here the test
/// is reported as skipped with the reason.
/// </summary>
public class LlamaCppOracleTests
{
    public static readonly string[] TrickyStrings =
    [
        "", " ", "  ", "   ", "\n", "\n\n", " \n", "\n \n", "\t", "\t\t x", "\r\n", " \r\n  \r\n", "a  b", "a   b   ", "  leading", "trailing  ",
        "Hello world", "Hello, world!", "HELLO World", "hello\nworld\n\n\nagain", "line one\r\nline two",
        "I'm you're we've they'll he'd she's it't", "I'M YOU'RE WE'VE THEY'LL", "'s 'S ''s", "rock'n'roll",
        "1", "12", "123", "1234", "12345678901", "3.14159", "1,000,000", "2024-11-25", "a1b22c333d4444", " 42", "x 1 22 333",
        "٣٤٥ ١٢", "Ⅻ ½ ²", "½½½½",
        "🦙", "🦙🦙🦙", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", " 🦙 llama", "a🦙b", "😀😃😄😁😆😅😂🤣",
        "镇", "你好，世界！", "日本語のテキストです。", "한국어 텍스트", "中文 English 混合 mixed", "𠀀𠀁 𪚥",
        "Привет, мир!", "Ελληνικά", "עברית", "مرحبا بالعالم", "हिन्दी भाषा", "ภาษาไทย", "Tiếng Việt có dấu",
        "café naïve résumé", "e\u0301 combining", "ﬁ ligature", "ß ẞ", "Ꙋ🦙", "🦙Ꙋ",
        "fn main() { println!(\"hi\"); }", "if (a <= b && c != d) { return x[i]; }", "<html><body>x</body></html>",
        "    indented code\n        more", "def f(x):\n\treturn x ** 2\n", "#!/bin/bash\necho $HOME",
        "((((((((((", "!!!???...", "—–-", "\"quoted\" 'single'", "a.b,c;d:e", "~`@#$%^&*()_+=",
        "<s>", "</s>", "<unk>", "<s> hello </s>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
        "<|reserved_special_token_5|>x", "<|not_a_token|>",
        "\u00a0non-breaking\u00a0space", "\u3000ideographic space", "zero\u200bwidth", "\u2028line sep",
        "\u0000null", "\u0001\u0002\u0003", "\u007f\u0080\u009f", "\uFFFD", "\uD800 lone high", "lone low \uDC00", "\uDBFF\uDFFF",
        "The quick brown fox jumps over the lazy dog. " + new string(' ', 17) + "Spaces!" + new string('\n', 5) + "end",
    ];

    /// <summary>The real vocabularies, plus the Llama 3 vocabulary under the other pre-tokenizers (exercises their splitting rules).</summary>
    public static TheoryData<string, string?> Vocabularies() => new()
    {
        { "llama2", null }, { "mistral", null }, { "llama3", null }, { "llama3", "qwen2" }, { "llama3", "gpt-2" }, { "llama3", "smollm" },
    };

    [Theory]
    [MemberData(nameof(Vocabularies))]
    public void Token_ids_match_llama_cpp(string vocabularyName, string? preTokenizer)
    {
        // One loader for every llama.cpp test in the process: LLamaSharp's native configuration can be set only
        // once, before the first load, so two classes configuring it in parallel would race.
        string? reason = Golden.LlamaCppOracle.UnavailableReason;
        if (reason is not null) Assert.Skip(reason);

        ITokenizer tokenizer = TokenizerTestData.ByName(vocabularyName);
        if (preTokenizer is not null)
        {
            tokenizer = Tokenizer.Create(tokenizer.Vocabulary with { PreTokenizer = preTokenizer });
        }
        string path = Path.Combine(Path.GetTempPath(), $"pluginengine-vocab-{vocabularyName}-{preTokenizer}-{Environment.ProcessId}.gguf");
        try
        {
            WriteVocabOnlyGguf(tokenizer.Vocabulary, path);
            using LLamaWeights weights = LLamaWeights.LoadFromFile(new ModelParams(path) { VocabOnly = true, GpuLayerCount = 0 });
            Assert.Equal(tokenizer.VocabularySize, weights.Vocab.Count);

            var mismatches = new List<string>();
            foreach (string text in TrickyStrings.Concat(RandomStrings(seed: 1234, count: 300)))
            {
                foreach (bool parseSpecial in new[] { false, true })
                {
                    int[] expected = weights.Tokenize(text, true, parseSpecial, Encoding.UTF8).Select(t => (int)t).ToArray();
                    int[] actual = tokenizer.Encode(text, addBos: true, parseSpecial);
                    if (!expected.SequenceEqual(actual))
                    {
                        mismatches.Add($"{Escape(text)} (parseSpecial={parseSpecial}): llama.cpp [{string.Join(",", expected)}] ours [{string.Join(",", actual)}]");
                    }
                }
            }
            Assert.True(mismatches.Count == 0, $"{mismatches.Count} mismatches:\n" + string.Join("\n", mismatches.Take(20)));
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Writes the vocabulary the way convert_hf_to_gguf.py would, with the smallest llama hyperparameters llama.cpp accepts.</summary>
    internal static void WriteVocabOnlyGguf(TokenizerVocabulary vocabulary, string path)
    {
        var writer = new GgufWriter()
            .AddMetadata("general.architecture", GgufValue.String("llama"))
            .AddMetadata("general.name", GgufValue.String("vocab-only tokenizer oracle"))
            .AddMetadata("llama.context_length", GgufValue.UInt32(4096))
            .AddMetadata("llama.embedding_length", GgufValue.UInt32(64))
            .AddMetadata("llama.block_count", GgufValue.UInt32(1))
            .AddMetadata("llama.feed_forward_length", GgufValue.UInt32(128))
            .AddMetadata("llama.attention.head_count", GgufValue.UInt32(2))
            .AddMetadata("llama.attention.head_count_kv", GgufValue.UInt32(2))
            .AddMetadata("llama.attention.layer_norm_rms_epsilon", GgufValue.Float32(1e-5f))
            .AddMetadata("llama.rope.dimension_count", GgufValue.UInt32(32))
            .AddMetadata("llama.vocab_size", GgufValue.UInt32((uint)vocabulary.Tokens.Length))
            .AddMetadata(TokenizerMetadataKeys.Model, GgufValue.String(vocabulary.Model == TokenizerModelKind.SentencePiece ? "llama" : "gpt2"))
            .AddMetadata(TokenizerMetadataKeys.PreTokenizer, GgufValue.String(vocabulary.PreTokenizer))
            .AddMetadata(TokenizerMetadataKeys.Tokens, GgufValue.StringArray(vocabulary.Tokens));
        if (vocabulary.Scores is { } scores)
        {
            writer.AddMetadata(TokenizerMetadataKeys.Scores, GgufValue.Float32Array(scores));
        }
        if (vocabulary.TokenTypes is { } types)
        {
            writer.AddMetadata(TokenizerMetadataKeys.TokenTypes, GgufValue.Int32Array(types));
        }
        if (vocabulary.Merges is { } merges)
        {
            writer.AddMetadata(TokenizerMetadataKeys.Merges, GgufValue.StringArray(merges));
        }
        void Id(string key, int id)
        {
            if (id >= 0)
            {
                writer.AddMetadata(key, GgufValue.UInt32((uint)id));
            }
        }
        Id(TokenizerMetadataKeys.BosTokenId, vocabulary.BosTokenId);
        Id(TokenizerMetadataKeys.EosTokenId, vocabulary.EosTokenId);
        Id(TokenizerMetadataKeys.UnknownTokenId, vocabulary.UnknownTokenId);
        Id(TokenizerMetadataKeys.PaddingTokenId, vocabulary.PaddingTokenId);
        writer.AddMetadata(TokenizerMetadataKeys.AddBosToken, GgufValue.Bool(vocabulary.AddBos))
            .AddMetadata(TokenizerMetadataKeys.AddEosToken, GgufValue.Bool(vocabulary.AddEos))
            .AddMetadata(TokenizerMetadataKeys.AddSpacePrefix, GgufValue.Bool(vocabulary.AddSpacePrefix));
        writer.WriteTo(path);
    }

    /// <summary>Deterministic strings drawn from an alphabet of the hard cases: whitespace kinds, digits, apostrophes, scripts, emoji.</summary>
    internal static IEnumerable<string> RandomStrings(int seed, int count)
    {
        string[] alphabet =
        [
            " ", " ", " ", "\n", "\t", "\r", "\u00a0", "'", "'s", "'LL", "a", "b", "Z", "e", "é", "ß", "0", "1", "9", "٣",
            ".", ",", "!", "?", "-", "(", "#", "$", "<", ">", "|", "_", "你", "好", "镇", "日本", "한", "ж", "λ", "ا", "ह", "ि",
            "🦙", "😀", "👍🏽", "\u200d", "𠀀", "the", " the", "ing", "Hello", "world", "123", "  ", "\n\n", "<s>", "<|eot_id|>",
        ];
        var random = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            var builder = new StringBuilder();
            int parts = random.Next(1, 24);
            for (int p = 0; p < parts; p++)
            {
                builder.Append(alphabet[random.Next(alphabet.Length)]);
            }
            yield return builder.ToString();
        }
    }

    private static string Escape(string text)
    {
        var builder = new StringBuilder("\"");
        foreach (char c in text)
        {
            builder.Append(c < 0x20 || char.IsSurrogate(c) && text.Length < 3 ? $"\\u{(int)c:X4}" : c.ToString());
        }
        return builder.Append('"').ToString();
    }
}

using PluginEngine.Core.Gguf;
using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

/// <summary>The vocabulary survives GgufWriter → GgufReader → <see cref="TokenizerVocabulary.FromMetadata"/> unchanged.</summary>
public class GgufVocabularyTests
{
    [Theory]
    [InlineData("llama2")]
    [InlineData("llama3")]
    public void Vocabulary_read_back_from_gguf_tokenizes_identically(string name)
    {
        ITokenizer original = TokenizerTestData.ByName(name);
        string path = Path.Combine(Path.GetTempPath(), $"pluginengine-vocab-roundtrip-{name}-{Environment.ProcessId}.gguf");
        try
        {
            LlamaCppOracleTests.WriteVocabOnlyGguf(original.Vocabulary, path);
            GgufFile file = GgufReader.Read(path);
            TokenizerVocabulary read = PluginEngine.Core.Models.TokenizerFactory.VocabularyFromGguf(file);

            TokenizerVocabulary expected = original.Vocabulary;
            Assert.Equal(expected.Model, read.Model);
            Assert.Equal(expected.PreTokenizer, read.PreTokenizer);
            Assert.Equal(expected.Tokens, read.Tokens);
            Assert.Equal(expected.Scores, read.Scores);
            Assert.Equal(expected.TokenTypes, read.TokenTypes);
            Assert.Equal(expected.Merges, read.Merges);
            Assert.Equal((expected.BosTokenId, expected.EosTokenId, expected.UnknownTokenId, expected.PaddingTokenId),
                (read.BosTokenId, read.EosTokenId, read.UnknownTokenId, read.PaddingTokenId));
            Assert.Equal((expected.AddBos, expected.AddEos, expected.AddSpacePrefix), (read.AddBos, read.AddEos, read.AddSpacePrefix));

            const string text = "Read back: 12345 🦙 镇\n\n  done<|eot_id|></s>";
            Assert.Equal(original.Encode(text, true, true), Tokenizer.Create(read).Encode(text, true, true));
        }
        finally
        {
            File.Delete(path);
        }
    }
}

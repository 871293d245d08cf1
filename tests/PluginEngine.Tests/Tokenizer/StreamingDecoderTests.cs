using System.Text;
using PluginEngine.Core.Tokenizer;
using Xunit;

namespace PluginEngine.Tests.TokenizerTests;

public class StreamingDecoderTests
{
    [Fact]
    public void Byte_fallback_tokens_fed_one_by_one_never_emit_half_a_character()
    {
        ITokenizer tokenizer = TokenizerTestData.Llama2Tokenizer;
        int[] ids = tokenizer.Encode("a🦙Ꙋ镇b😀", addBos: true, parseSpecial: false);
        StreamingDecoder decoder = tokenizer.CreateStreamingDecoder(atSequenceStart: true);
        var outputs = new List<string>();
        foreach (int id in ids)
        {
            string text = decoder.Append(id);
            outputs.Add(text);
            AssertCompleteText(text);
        }
        Assert.Equal("", decoder.Flush());
        Assert.Equal("a🦙Ꙋ镇b😀", string.Concat(outputs));
        // The four byte tokens of 🦙 give nothing until the last one, which gives the whole character.
        Assert.Contains("🦙", outputs);
        Assert.True(outputs.Count(o => o.Length == 0) >= 3 + 2 + 3);
    }

    [Fact]
    public void Incomplete_sequence_is_held_back_and_becomes_a_replacement_character_at_flush()
    {
        ITokenizer tokenizer = TokenizerTestData.Llama2Tokenizer;
        StreamingDecoder decoder = tokenizer.CreateStreamingDecoder();
        Assert.Equal("", decoder.Append(0xE4 + 3));
        Assert.Equal("", decoder.Append(0xB8 + 3));
        Assert.Equal("\uFFFD", decoder.Flush());
        // An invalid continuation is known to be invalid at once: replacement, then the valid byte.
        Assert.Equal("", decoder.Append(0xE4 + 3));
        Assert.Equal("\uFFFDA", decoder.Append('A' + 3));
        Assert.Equal("", decoder.Flush());
    }

    [Theory]
    [InlineData("llama2")]
    [InlineData("llama3")]
    public void Streamed_text_equals_decode_for_random_token_sequences(string vocabulary)
    {
        ITokenizer tokenizer = TokenizerTestData.ByName(vocabulary);
        var random = new Random(7);
        for (int round = 0; round < 300; round++)
        {
            int[] ids = new int[random.Next(1, 40)];
            for (int i = 0; i < ids.Length; i++)
            {
                // Mix byte-ish low ids (byte tokens / single-byte pieces) with arbitrary ones.
                ids[i] = random.Next(3) == 0 ? random.Next(0, 259) : random.Next(tokenizer.VocabularySize);
            }
            StreamingDecoder decoder = tokenizer.CreateStreamingDecoder(atSequenceStart: true);
            var streamed = new StringBuilder();
            foreach (int id in ids)
            {
                string text = decoder.Append(id);
                AssertCompleteText(text);
                streamed.Append(text);
            }
            streamed.Append(decoder.Flush());
            Assert.Equal(tokenizer.Decode(ids), streamed.ToString());
        }
    }

    [Fact]
    public void Continuation_keeps_the_leading_space_and_special_tokens_render_on_request()
    {
        ITokenizer tokenizer = TokenizerTestData.Llama2Tokenizer;
        int[] ids = tokenizer.Encode("Hello", addBos: false, parseSpecial: false); // "▁Hello"
        Assert.Equal(" Hello", tokenizer.CreateStreamingDecoder().Append(ids[0]));
        Assert.Equal("Hello", tokenizer.CreateStreamingDecoder(atSequenceStart: true).Append(ids[0]));
        StreamingDecoder special = tokenizer.CreateStreamingDecoder(renderSpecial: true);
        Assert.Equal("</s>", special.Append(2));
        Assert.Equal("", tokenizer.CreateStreamingDecoder().Append(2));
    }

    /// <summary>No lone surrogate (half of a character) in a streamed piece.</summary>
    private static void AssertCompleteText(string text)
    {
        for (int i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]))
            {
                Assert.True(i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]), $"half a surrogate pair in \"{text}\"");
                i++;
            }
            else
            {
                Assert.False(char.IsLowSurrogate(text[i]), $"half a surrogate pair in \"{text}\"");
            }
        }
    }
}

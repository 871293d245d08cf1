using System.Text;

namespace PluginEngine.Core.Tokenizer;

/// <summary>
/// Decodes generated tokens one at a time and hands out only complete characters: bytes of a UTF-8 sequence that is
/// still incomplete (byte-fallback tokens, a multi-byte character split over tokens) are held back until the rest
/// arrives. Invalid sequences become U+FFFD as soon as they are known to be invalid; an incomplete tail becomes U+FFFD
/// at <see cref="Flush"/>. Concatenating all outputs plus <see cref="Flush"/> equals <see cref="ITokenizer.Decode"/>
/// of the same tokens (when created with atSequenceStart). Not thread-safe: one decoder per generation stream.
/// </summary>
public sealed class StreamingDecoder
{
    private readonly TokenizerBase tokenizer;
    private readonly bool renderSpecial;
    // UTF8Encoding(false, false): replacement fallback, so invalid input yields U+FFFD instead of throwing.
    private readonly Decoder decoder = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetDecoder();
    private char[] chars = new char[64];
    private readonly bool atSequenceStart;
    private bool stripNext;

    internal StreamingDecoder(TokenizerBase tokenizer, bool renderSpecial, bool atSequenceStart)
    {
        this.tokenizer = tokenizer;
        this.renderSpecial = renderSpecial;
        this.atSequenceStart = atSequenceStart;
        stripNext = atSequenceStart;
    }

    /// <summary>Adds one token and returns the text it completes ("" when nothing is complete yet).</summary>
    public string Append(int tokenId)
    {
        ReadOnlySpan<byte> piece = tokenizer.PieceForDecoding(tokenId, renderSpecial, ref stripNext);
        if (piece.IsEmpty)
        {
            return string.Empty;
        }
        // Up to 3 held-back bytes may each turn into a U+FFFD, plus at most one char per new byte.
        int needed = piece.Length + 4;
        if (chars.Length < needed)
        {
            chars = new char[Math.Max(needed, chars.Length * 2)];
        }
        int count = decoder.GetChars(piece, chars, flush: false);
        return count == 0 ? string.Empty : new string(chars, 0, count);
    }

    /// <summary>Returns U+FFFD for the held-back bytes of an unfinished sequence (or "") and drops them; the stream can go on.</summary>
    public string Flush()
    {
        int count = decoder.GetChars(ReadOnlySpan<byte>.Empty, chars, flush: true);
        decoder.Reset();
        return count == 0 ? string.Empty : new string(chars, 0, count);
    }

    /// <summary>Forgets held-back bytes and starts over as when created.</summary>
    public void Reset()
    {
        decoder.Reset();
        stripNext = atSequenceStart;
    }
}

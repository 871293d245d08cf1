using System.Buffers;
using System.Text;

namespace PluginEngine.Core.Tokenizer;

/// <summary>
/// What both tokenizers share: the text→id tables, the decoded byte piece of every token, special-token splitting,
/// BOS/EOS handling and decoding. Subclasses only encode a run of plain text.
/// </summary>
internal abstract class TokenizerBase : ITokenizer
{
    /// <summary>A stretch of input: plain text (Token = -1) or a special token matched in the text.</summary>
    protected readonly record struct Fragment(int Start, int Length, int Token);

    private readonly record struct SpecialToken(string Text, int Id, bool MatchedAlways);

    private readonly TokenType[] tokenTypes;
    private readonly byte[] pieceBytes;
    private readonly int[] pieceOffsets; // piece of token i is pieceBytes[pieceOffsets[i]..pieceOffsets[i + 1]]
    private readonly byte[][] specialPieces; // literal UTF-8 text of control/unknown tokens, for renderSpecial
    private readonly SpecialToken[] specialTokens; // longest first: longer matches win, as in llama.cpp
    private readonly bool stripDecodedSpacePrefix;

    /// <summary>Lookup of text pieces that may come out of merging: normal (and untyped) tokens only.</summary>
    protected readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> NormalTokens;

    protected TokenizerBase(TokenizerVocabulary vocabulary, bool stripDecodedSpacePrefix)
    {
        Vocabulary = vocabulary;
        this.stripDecodedSpacePrefix = stripDecodedSpacePrefix;
        string[] tokens = vocabulary.Tokens;
        tokenTypes = new TokenType[tokens.Length];
        var normal = new Dictionary<string, int>(tokens.Length, StringComparer.Ordinal);
        var specials = new List<SpecialToken>();
        for (int id = 0; id < tokens.Length; id++)
        {
            TokenType type = vocabulary.GetTokenType(id);
            tokenTypes[id] = type;
            switch (type)
            {
                case TokenType.Normal or TokenType.Undefined:
                    // Later duplicates win, as in llama.cpp's token_to_id.
                    normal[tokens[id]] = id;
                    break;
                case TokenType.Control or TokenType.Unknown or TokenType.UserDefined when tokens[id].Length > 0:
                    specials.Add(new SpecialToken(tokens[id], id, type == TokenType.UserDefined));
                    break;
            }
        }
        NormalTokens = normal.GetAlternateLookup<ReadOnlySpan<char>>();
        specialTokens = specials
            .OrderByDescending(s => Encoding.UTF8.GetByteCount(s.Text))
            .ThenBy(s => s.Id)
            .ToArray();

        // Precompute every token's decoded bytes once, so decoding and streaming are plain copies.
        var bytes = new ArrayBufferWriter<byte>(tokens.Length * 8);
        pieceOffsets = new int[tokens.Length + 1];
        specialPieces = new byte[tokens.Length][];
        for (int id = 0; id < tokens.Length; id++)
        {
            pieceOffsets[id] = bytes.WrittenCount;
            switch (tokenTypes[id])
            {
                case TokenType.Control:
                    specialPieces[id] = Encoding.UTF8.GetBytes(tokens[id]);
                    break;
                case TokenType.Unknown:
                    // The text it stood for is lost: show a replacement character (the literal text with renderSpecial).
                    specialPieces[id] = Encoding.UTF8.GetBytes(tokens[id]);
                    bytes.Write("\uFFFD"u8);
                    break;
                case TokenType.Unused:
                    break;
                case TokenType.UserDefined:
                    bytes.Write(Encoding.UTF8.GetBytes(tokens[id]));
                    break;
                default:
                    WritePiece(id, tokens[id], tokenTypes[id], bytes);
                    break;
            }
        }
        pieceOffsets[tokens.Length] = bytes.WrittenCount;
        pieceBytes = bytes.WrittenSpan.ToArray();
    }

    public TokenizerVocabulary Vocabulary { get; }

    public int VocabularySize => tokenTypes.Length;

    public int BosTokenId => Vocabulary.BosTokenId;

    public int EosTokenId => Vocabulary.EosTokenId;

    public TokenType GetTokenType(int id)
    {
        CheckId(id);
        return tokenTypes[id];
    }

    /// <summary>Appends the bytes a normal or byte token decodes to.</summary>
    protected abstract void WritePiece(int id, string text, TokenType type, ArrayBufferWriter<byte> output);

    /// <summary>Encodes one run of plain text (no special tokens in it, no lone surrogates).</summary>
    /// <param name="atStartOrAfterSpecial">The run begins the input or directly follows a special token.</param>
    protected abstract void EncodeText(ReadOnlySpan<char> text, bool atStartOrAfterSpecial, List<int> output);

    public int[] Encode(string text, bool addBos, bool parseSpecial) => Encode(text, addBos, parseSpecial, []);

    public int[] Encode(string text, bool addBos, ReadOnlySpan<int> literalBreaks) => Encode(text, addBos, parseSpecial: true, literalBreaks);

    private int[] Encode(string text, bool addBos, bool parseSpecial, ReadOnlySpan<int> literalBreaks)
    {
        ArgumentNullException.ThrowIfNull(text);
        string clean = ReplaceLoneSurrogates(text);
        var output = new List<int>(clean.Length / 3 + 4);
        if (addBos && Vocabulary.AddBos)
        {
            output.Add(Vocabulary.BosTokenId);
        }
        bool atStartOrAfterSpecial = true;
        foreach (Fragment fragment in SplitSpecial(clean, parseSpecial, literalBreaks))
        {
            if (fragment.Token >= 0)
            {
                output.Add(fragment.Token);
                atStartOrAfterSpecial = true;
            }
            else
            {
                EncodeText(clean.AsSpan(fragment.Start, fragment.Length), atStartOrAfterSpecial, output);
                atStartOrAfterSpecial = false;
            }
        }
        if (addBos && Vocabulary.AddEos)
        {
            output.Add(Vocabulary.EosTokenId);
        }
        return output.ToArray();
    }

    /// <summary>
    /// Cuts the text at special tokens, longest token first over the whole text (llama.cpp's partition order).
    /// Control and unknown tokens are matched only with <paramref name="parseSpecial"/>; user-defined ones always.
    /// No match may cross one of <paramref name="literalBreaks"/> (sorted positions); the next occurrence is tried instead.
    /// </summary>
    private List<Fragment> SplitSpecial(string text, bool parseSpecial, ReadOnlySpan<int> literalBreaks)
    {
        var fragments = new List<Fragment> { new(0, text.Length, -1) };
        if (text.Length == 0)
        {
            fragments.Clear();
            return fragments;
        }
        foreach (SpecialToken special in specialTokens)
        {
            if (!parseSpecial && !special.MatchedAlways)
            {
                continue;
            }
            for (int i = 0; i < fragments.Count; i++)
            {
                Fragment fragment = fragments[i];
                if (fragment.Token >= 0)
                {
                    continue;
                }
                int found = FindUnbroken(text.AsSpan(fragment.Start, fragment.Length), special.Text, fragment.Start, literalBreaks);
                if (found < 0)
                {
                    continue;
                }
                int matchStart = fragment.Start + found;
                int afterMatch = matchStart + special.Text.Length;
                int fragmentEnd = fragment.Start + fragment.Length;
                fragments.RemoveAt(i);
                int insertAt = i;
                if (found > 0)
                {
                    fragments.Insert(insertAt++, new Fragment(fragment.Start, found, -1));
                }
                fragments.Insert(insertAt, new Fragment(matchStart, special.Text.Length, special.Id));
                if (afterMatch < fragmentEnd)
                {
                    fragments.Insert(insertAt + 1, new Fragment(afterMatch, fragmentEnd - afterMatch, -1));
                }
                // Continue with the remainder (the next fragment after the match) on the next iteration.
                i = insertAt;
            }
        }
        return fragments;
    }

    /// <summary>First occurrence of <paramref name="token"/> in <paramref name="span"/> (which starts at <paramref name="offset"/> of the text) that crosses no literal break.</summary>
    private static int FindUnbroken(ReadOnlySpan<char> span, string token, int offset, ReadOnlySpan<int> literalBreaks)
    {
        int from = 0;
        while (true)
        {
            int found = span[from..].IndexOf(token, StringComparison.Ordinal);
            if (found < 0)
            {
                return -1;
            }
            found += from;
            int start = offset + found;
            int next = literalBreaks.BinarySearch(start + 1);
            if (next < 0)
            {
                next = ~next; // first break after start + 1
            }
            if (next >= literalBreaks.Length || literalBreaks[next] >= start + token.Length)
            {
                return found;
            }
            from = found + 1;
        }
    }

    public ReadOnlySpan<byte> TokenPiece(int id, bool renderSpecial = false)
    {
        CheckId(id);
        if (renderSpecial && specialPieces[id] is { } literal)
        {
            return literal;
        }
        return pieceBytes.AsSpan(pieceOffsets[id], pieceOffsets[id + 1] - pieceOffsets[id]);
    }

    public string Decode(ReadOnlySpan<int> tokens, bool renderSpecial = false)
    {
        int total = 0;
        foreach (int id in tokens)
        {
            total += TokenPiece(id, renderSpecial).Length;
        }
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Math.Max(total, 1));
        try
        {
            int written = 0;
            bool stripNext = true;
            foreach (int id in tokens)
            {
                ReadOnlySpan<byte> piece = PieceForDecoding(id, renderSpecial, ref stripNext);
                piece.CopyTo(buffer.AsSpan(written));
                written += piece.Length;
            }
            // Encoding.UTF8 replaces invalid sequences with U+FFFD.
            return Encoding.UTF8.GetString(buffer, 0, written);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// The piece of <paramref name="id"/> as it appears in decoded text. The SentencePiece encoder puts a space in front
    /// of the text at the start and after every special token, so decoding drops one leading space there:
    /// <paramref name="stripNext"/> says whether the next text piece is in such a place, and is updated.
    /// </summary>
    internal ReadOnlySpan<byte> PieceForDecoding(int id, bool renderSpecial, ref bool stripNext)
    {
        ReadOnlySpan<byte> piece = TokenPiece(id, renderSpecial);
        if (tokenTypes[id] is TokenType.Control or TokenType.UserDefined)
        {
            stripNext = true;
            return piece;
        }
        if (piece.IsEmpty)
        {
            return piece;
        }
        if (stripNext && stripDecodedSpacePrefix && piece[0] == (byte)' ')
        {
            piece = piece[1..];
        }
        stripNext = false;
        return piece;
    }

    public StreamingDecoder CreateStreamingDecoder(bool renderSpecial = false, bool atSequenceStart = false) =>
        new(this, renderSpecial, atSequenceStart);

    protected void CheckId(int id)
    {
        if ((uint)id >= (uint)tokenTypes.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(id), id, $"token id is outside the vocabulary (0..{tokenTypes.Length - 1})");
        }
    }

    /// <summary>
    /// A .NET string may hold unpaired surrogates; UTF-8 has no encoding for them, so they become U+FFFD, exactly
    /// what converting the string to UTF-8 for llama.cpp would give.
    /// </summary>
    internal static string ReplaceLoneSurrogates(string text)
    {
        if (!text.AsSpan().ContainsAnyInRange('\uD800', '\uDFFF'))
        {
            return text;
        }
        return string.Create(text.Length, text, static (destination, source) =>
        {
            for (int i = 0; i < source.Length; i++)
            {
                char c = source[i];
                if (char.IsHighSurrogate(c) && i + 1 < source.Length && char.IsLowSurrogate(source[i + 1]))
                {
                    destination[i] = c;
                    destination[i + 1] = source[i + 1];
                    i++;
                }
                else
                {
                    destination[i] = char.IsSurrogate(c) ? '\uFFFD' : c;
                }
            }
        });
    }
}

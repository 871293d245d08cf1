namespace PluginEngine.Core.Tokenizer;

/// <summary>
/// Turns text into token ids and back. Implementations are immutable after creation and safe to use from several
/// threads at once. Text is a .NET string: lone surrogates in input are encoded as U+FFFD (what UTF-8 conversion of
/// the string produces); token byte sequences that are not valid UTF-8 decode to U+FFFD.
/// </summary>
public interface ITokenizer
{
    /// <summary>The data this tokenizer was built from.</summary>
    TokenizerVocabulary Vocabulary { get; }

    /// <summary>Number of token ids.</summary>
    int VocabularySize { get; }

    /// <summary>Beginning-of-sequence token id, or -1.</summary>
    int BosTokenId { get; }

    /// <summary>End-of-sequence token id, or -1.</summary>
    int EosTokenId { get; }

    /// <summary>
    /// Encodes <paramref name="text"/>. <paramref name="addBos"/> adds the special tokens the vocabulary asks for
    /// (BOS when <see cref="TokenizerVocabulary.AddBos"/>, EOS when <see cref="TokenizerVocabulary.AddEos"/>), like
    /// llama.cpp's <c>add_special</c>. <paramref name="parseSpecial"/> matches control tokens written in the text
    /// (e.g. "&lt;|eot_id|&gt;") as single ids; user-defined tokens are always matched.
    /// </summary>
    int[] Encode(string text, bool addBos, bool parseSpecial);

    /// <summary>
    /// Encodes <paramref name="text"/> with special tokens parsed, except that no special token is matched across any
    /// position in <paramref name="literalBreaks"/> (sorted; a break at p lies between characters p-1 and p). A chat
    /// prompt uses this to keep control-token text that came from a user's message as plain text, while the template's
    /// own markers become special tokens (see docs/chat.md).
    /// </summary>
    int[] Encode(string text, bool addBos, ReadOnlySpan<int> literalBreaks);

    /// <summary>
    /// Decodes ids to text. Control tokens produce nothing unless <paramref name="renderSpecial"/>. A SentencePiece
    /// vocabulary with a space prefix drops one leading space from the text at the start and after each special
    /// token, undoing the space <see cref="Encode"/> put there.
    /// </summary>
    string Decode(ReadOnlySpan<int> tokens, bool renderSpecial = false);

    /// <summary>
    /// The bytes token <paramref name="id"/> contributes to decoded text (UTF-8, possibly an incomplete sequence for
    /// byte tokens). Control tokens give their text only when <paramref name="renderSpecial"/>, else nothing.
    /// </summary>
    ReadOnlySpan<byte> TokenPiece(int id, bool renderSpecial = false);

    /// <summary>The type of token <paramref name="id"/>.</summary>
    TokenType GetTokenType(int id);

    /// <summary>
    /// A decoder for generated tokens that emits only complete characters. With <paramref name="atSequenceStart"/> the
    /// tokens start a sequence (the first text piece loses its SentencePiece space prefix, as in <see cref="Decode"/>);
    /// without it they continue a prompt and keep a leading space. After special tokens the prefix is always dropped.
    /// </summary>
    StreamingDecoder CreateStreamingDecoder(bool renderSpecial = false, bool atSequenceStart = false);
}

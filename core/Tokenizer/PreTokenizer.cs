using System.Buffers;
using System.Globalization;
using System.Text;

namespace PluginEngine.Core.Tokenizer;

/// <summary>The splitting rules a byte-level BPE vocabulary was trained with.</summary>
public enum PreTokenizerKind
{
    /// <summary>GPT-2: <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c>.</summary>
    Gpt2,

    /// <summary>GPT-2 rules after first cutting every digit out on its own (SmolLM: <c>\p{N}</c> then GPT-2).</summary>
    Gpt2SingleDigits,

    /// <summary>Llama 3: <c>(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+</c>.</summary>
    Llama3,

    /// <summary>Qwen2: the Llama 3 rules with <c>\p{N}</c> (one digit per word) instead of <c>\p{N}{1,3}</c>.</summary>
    Qwen2,
}

/// <summary>
/// Splits text into pre-tokens ("words") the way the byte-level BPE regexes do, written out by hand over Unicode
/// code points: .NET's Regex classifies UTF-16 code units, so a supplementary-plane letter (𝐀, CJK extension B) would
/// not be \p{L} there; here every class is decided on the whole code point with <see cref="Rune"/>.
/// Unassigned code points (Cn) match none of the classes and become one-code-point words, as in llama.cpp.
/// </summary>
public static class PreTokenizerRules
{
    /// <summary>
    /// Maps a GGUF <c>tokenizer.ggml.pre</c> name to its rules. Unknown names throw <see cref="NotSupportedException"/>:
    /// splitting with the wrong rules silently produces token ids the model was never trained on.
    /// "default" (what a file without the key gets) means the GPT-2 rules here; llama.cpp instead uses an ad-hoc chain
    /// of four regexes for it (punctuation runs, GPT-2, digit runs, 3-digit groups) and warns that quality is degraded,
    /// so ids differ from llama.cpp for such files (contractions, digit runs).
    /// </summary>
    public static PreTokenizerKind ForName(string name) => name switch
    {
        "default" or "gpt-2" or "gpt2" => PreTokenizerKind.Gpt2,
        "smollm" => PreTokenizerKind.Gpt2SingleDigits,
        "llama-bpe" or "llama3" or "llama-v3" or "smaug-bpe" => PreTokenizerKind.Llama3,
        "qwen2" or "deepseek-r1-qwen" => PreTokenizerKind.Qwen2,
        _ => throw new NotSupportedException(
            $"'{TokenizerMetadataKeys.PreTokenizer}' = '{name}' is not supported (supported: default, gpt-2, smollm, llama-bpe, llama3, smaug-bpe, qwen2, deepseek-r1-qwen)"),
    };

    private enum CharClass : byte
    {
        Letter,
        Number,
        Newline,      // '\r' or '\n' (also whitespace)
        Whitespace,   // other Unicode White_Space, including ' '
        Other,        // anything else that is assigned: punctuation, symbols, marks, controls, private use
        Unassigned,
    }

    /// <summary>
    /// Appends the (start, length) UTF-16 ranges of the pre-tokens of <paramref name="text"/> to <paramref name="words"/>.
    /// The text must not contain lone surrogates (the tokenizer replaces them with U+FFFD first).
    /// </summary>
    public static void Split(ReadOnlySpan<char> text, PreTokenizerKind kind, List<Range> words)
    {
        switch (kind)
        {
            case PreTokenizerKind.Gpt2:
                SplitGpt2(text, 0, text.Length, words);
                break;
            case PreTokenizerKind.Gpt2SingleDigits:
                SplitGpt2SingleDigits(text, words);
                break;
            case PreTokenizerKind.Llama3:
                SplitLlama3(text, maxDigits: 3, words);
                break;
            case PreTokenizerKind.Qwen2:
                SplitLlama3(text, maxDigits: 1, words);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown pre-tokenizer");
        }
    }

    private static CharClass Classify(ReadOnlySpan<char> text, int pos, int end, out int width)
    {
        if (Rune.DecodeFromUtf16(text[pos..end], out Rune rune, out width) != OperationStatus.Done)
        {
            width = 1;
            return CharClass.Other;
        }
        if (rune.Value is '\r' or '\n')
        {
            return CharClass.Newline;
        }
        if (Rune.IsWhiteSpace(rune))
        {
            return CharClass.Whitespace;
        }
        switch (Rune.GetUnicodeCategory(rune))
        {
            case UnicodeCategory.UppercaseLetter:
            case UnicodeCategory.LowercaseLetter:
            case UnicodeCategory.TitlecaseLetter:
            case UnicodeCategory.ModifierLetter:
            case UnicodeCategory.OtherLetter:
                return CharClass.Letter;
            case UnicodeCategory.DecimalDigitNumber:
            case UnicodeCategory.LetterNumber:
            case UnicodeCategory.OtherNumber:
                return CharClass.Number;
            case UnicodeCategory.OtherNotAssigned:
                return CharClass.Unassigned;
            default:
                return CharClass.Other;
        }
    }

    private static CharClass ClassAt(ReadOnlySpan<char> text, int pos, int end) =>
        pos < end ? Classify(text, pos, end, out _) : CharClass.Unassigned;

    private static bool IsWhitespace(CharClass c) => c is CharClass.Whitespace or CharClass.Newline;

    /// <summary>Advances over code points of class <paramref name="wanted"/> from <paramref name="pos"/>, at most <paramref name="limit"/> of them.</summary>
    private static int Skip(ReadOnlySpan<char> text, int pos, int end, CharClass wanted, int limit = int.MaxValue)
    {
        for (int count = 0; pos < end && count < limit; count++)
        {
            if (Classify(text, pos, end, out int width) != wanted)
            {
                break;
            }
            pos += width;
        }
        return pos;
    }

    private static int SkipWhitespace(ReadOnlySpan<char> text, int pos, int end)
    {
        while (pos < end && IsWhitespace(Classify(text, pos, end, out int width)))
        {
            pos += width;
        }
        return pos;
    }

    /// <summary>Length of an English contraction at <paramref name="pos"/> ('s 't 're 've 'm 'll 'd), or 0.</summary>
    private static int ContractionLength(ReadOnlySpan<char> text, int pos, int end, bool ignoreCase)
    {
        if (text[pos] != '\'' || pos + 1 >= end)
        {
            return 0;
        }
        char c1 = Fold(text[pos + 1], ignoreCase);
        if (c1 is 's' or 't' or 'm' or 'd')
        {
            return 2;
        }
        if (pos + 2 < end)
        {
            char c2 = Fold(text[pos + 2], ignoreCase);
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
            {
                return 3;
            }
        }
        return 0;
    }

    // The regexes spell the case-insensitive forms as [sS], so only ASCII letters fold.
    private static char Fold(char c, bool ignoreCase) => ignoreCase && c is >= 'A' and <= 'Z' ? (char)(c + 32) : c;

    /// <summary>Whitespace run handling shared by both rule sets: <c>\s+(?!\S)</c> then <c>\s+</c>.</summary>
    private static int WhitespaceRunEnd(ReadOnlySpan<char> text, int pos, int end)
    {
        int runEnd = SkipWhitespace(text, pos, end);
        // \s+(?!\S): followed by non-space, the run gives its last character to the next word (" word"); whitespace
        // code points are all in the BMP, so the last one is one char wide.
        if (runEnd < end && runEnd - pos > 1)
        {
            return runEnd - 1;
        }
        return runEnd;
    }

    private static void SplitGpt2(ReadOnlySpan<char> text, int start, int end, List<Range> words)
    {
        int pos = start;
        while (pos < end)
        {
            int wordEnd = Gpt2WordEnd(text, pos, end);
            words.Add(new Range(pos, wordEnd));
            pos = wordEnd;
        }
    }

    private static int Gpt2WordEnd(ReadOnlySpan<char> text, int pos, int end)
    {
        int contraction = ContractionLength(text, pos, end, ignoreCase: false);
        if (contraction > 0)
        {
            return pos + contraction;
        }
        CharClass current = Classify(text, pos, end, out int width);
        // " ?X+" for X in letters, numbers, other: an optional leading space binds to the run after it.
        int runStart = pos;
        CharClass runClass = current;
        if (text[pos] == ' ')
        {
            CharClass next = ClassAt(text, pos + 1, end);
            if (next is CharClass.Letter or CharClass.Number or CharClass.Other)
            {
                runStart = pos + 1;
                runClass = next;
            }
        }
        if (runClass is CharClass.Letter or CharClass.Number or CharClass.Other)
        {
            return Skip(text, runStart, end, runClass);
        }
        if (IsWhitespace(current))
        {
            return WhitespaceRunEnd(text, pos, end);
        }
        return pos + width; // unassigned code point: a word of its own
    }

    private static void SplitGpt2SingleDigits(ReadOnlySpan<char> text, List<Range> words)
    {
        // First pass \p{N}: every digit is a word; the text between digits goes through the GPT-2 rules.
        int segmentStart = 0;
        int pos = 0;
        while (pos < text.Length)
        {
            CharClass c = Classify(text, pos, text.Length, out int width);
            if (c == CharClass.Number)
            {
                SplitGpt2(text, segmentStart, pos, words);
                words.Add(new Range(pos, pos + width));
                segmentStart = pos + width;
            }
            pos += width;
        }
        SplitGpt2(text, segmentStart, text.Length, words);
    }

    private static void SplitLlama3(ReadOnlySpan<char> text, int maxDigits, List<Range> words)
    {
        int end = text.Length;
        int pos = 0;
        while (pos < end)
        {
            int wordEnd = Llama3WordEnd(text, pos, end, maxDigits);
            words.Add(new Range(pos, wordEnd));
            pos = wordEnd;
        }
    }

    private static int Llama3WordEnd(ReadOnlySpan<char> text, int pos, int end, int maxDigits)
    {
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        int contraction = ContractionLength(text, pos, end, ignoreCase: true);
        if (contraction > 0)
        {
            return pos + contraction;
        }
        CharClass current = Classify(text, pos, end, out int width);
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if (current == CharClass.Letter)
        {
            return Skip(text, pos, end, CharClass.Letter);
        }
        if (current is not (CharClass.Newline or CharClass.Number) && ClassAt(text, pos + width, end) == CharClass.Letter)
        {
            return Skip(text, pos + width, end, CharClass.Letter);
        }
        // \p{N}{1,3}  (qwen2: \p{N})
        if (current == CharClass.Number)
        {
            return Skip(text, pos, end, CharClass.Number, maxDigits);
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        int runStart = text[pos] == ' ' && ClassAt(text, pos + 1, end) == CharClass.Other ? pos + 1 : pos;
        if (ClassAt(text, runStart, end) == CharClass.Other)
        {
            int runEnd = Skip(text, runStart, end, CharClass.Other);
            while (runEnd < end && text[runEnd] is '\r' or '\n')
            {
                runEnd++;
            }
            return runEnd;
        }
        if (IsWhitespace(current))
        {
            // \s*[\r\n]+ : a whitespace run containing line breaks ends right after its last line break.
            int runEnd = SkipWhitespace(text, pos, end);
            int lastBreak = text[pos..runEnd].LastIndexOfAny('\r', '\n');
            if (lastBreak >= 0)
            {
                return pos + lastBreak + 1;
            }
            return WhitespaceRunEnd(text, pos, end);
        }
        return pos + width; // unassigned code point: a word of its own
    }
}

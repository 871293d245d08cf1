using System.Buffers;
using System.Text;

namespace PluginEngine.Core.Tokenizer;

/// <summary>
/// SentencePiece BPE ("llama" vocabularies: Llama 1/2, Mistral, TinyLlama). Spaces become U+2581, a space is put in
/// front of text at the start and after special tokens when the vocabulary asks for it, then adjacent pieces are
/// merged best score first (ties: leftmost first) with a priority queue, O(n log n) in the text length. Characters
/// that are no token are written as byte-fallback tokens &lt;0xNN&gt; of their UTF-8 bytes.
/// </summary>
internal sealed class SentencePieceTokenizer : TokenizerBase
{
    private const char SpaceMark = '\u2581';

    private readonly float[] scores;
    private readonly int[] byteTokens = new int[256];

    /// <summary>A run of text in the working buffer; merged-away symbols have Length 0.</summary>
    private struct Symbol
    {
        public int Start;
        public int Length;
        public int Prev;
        public int Next;
    }

    private readonly record struct Bigram(int Left, int Right, int Length);

    /// <summary>Highest score first; on equal scores the leftmost pair first.</summary>
    private sealed class BigramOrder : IComparer<(float Score, int Left)>
    {
        public static readonly BigramOrder Instance = new();

        public int Compare((float Score, int Left) x, (float Score, int Left) y)
        {
            int byScore = y.Score.CompareTo(x.Score);
            return byScore != 0 ? byScore : x.Left.CompareTo(y.Left);
        }
    }

    /// <summary>Per-thread working memory, reused across calls so encoding does not allocate per symbol.</summary>
    private sealed class Scratch
    {
        public char[] Text = new char[256];
        public Symbol[] Symbols = new Symbol[256];
        public readonly PriorityQueue<Bigram, (float Score, int Left)> Queue = new(BigramOrder.Instance);
    }

    [ThreadStatic]
    private static Scratch? scratch;

    public SentencePieceTokenizer(TokenizerVocabulary vocabulary)
        : base(vocabulary, stripDecodedSpacePrefix: vocabulary.AddSpacePrefix)
    {
        scores = vocabulary.Scores!;
        Array.Fill(byteTokens, -1);
        for (int id = 0; id < vocabulary.Tokens.Length; id++)
        {
            if (GetTokenType(id) == TokenType.Byte && TokenizerVocabulary.TryParseBytePiece(vocabulary.Tokens[id], out byte value))
            {
                byteTokens[value] = id;
            }
        }
    }

    protected override void WritePiece(int id, string text, TokenType type, ArrayBufferWriter<byte> output)
    {
        if (type == TokenType.Byte && TokenizerVocabulary.TryParseBytePiece(text, out byte value))
        {
            output.Write([value]);
            return;
        }
        output.Write(Encoding.UTF8.GetBytes(text.Replace(SpaceMark, ' ')));
    }

    protected override void EncodeText(ReadOnlySpan<char> text, bool atStartOrAfterSpecial, List<int> output)
    {
        Scratch work = scratch ??= new Scratch();
        bool prefix = Vocabulary.AddSpacePrefix && atStartOrAfterSpecial;
        int length = text.Length + (prefix ? 1 : 0);
        if (length == 0)
        {
            return;
        }
        if (work.Text.Length < length)
        {
            work.Text = new char[Math.Max(length, work.Text.Length * 2)];
            work.Symbols = new Symbol[work.Text.Length];
        }
        Span<char> buffer = work.Text.AsSpan(0, length);
        if (prefix)
        {
            buffer[0] = ' ';
        }
        text.CopyTo(buffer[(prefix ? 1 : 0)..]);
        buffer.Replace(' ', SpaceMark);

        // One symbol per code point (a surrogate pair stays together).
        Symbol[] symbols = work.Symbols;
        int count = 0;
        for (int pos = 0; pos < length;)
        {
            int width = char.IsHighSurrogate(buffer[pos]) && pos + 1 < length && char.IsLowSurrogate(buffer[pos + 1]) ? 2 : 1;
            symbols[count] = new Symbol { Start = pos, Length = width, Prev = count - 1, Next = pos + width < length ? count + 1 : -1 };
            count++;
            pos += width;
        }

        PriorityQueue<Bigram, (float Score, int Left)> queue = work.Queue;
        queue.Clear();
        for (int i = 1; i < count; i++)
        {
            TryAddBigram(buffer, symbols, queue, i - 1, i);
        }
        while (queue.TryDequeue(out Bigram bigram, out _))
        {
            ref Symbol left = ref symbols[bigram.Left];
            ref Symbol right = ref symbols[bigram.Right];
            // Stale entry: one side was merged into something else since this pair was queued.
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Length)
            {
                continue;
            }
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0)
            {
                symbols[right.Next].Prev = bigram.Left;
            }
            TryAddBigram(buffer, symbols, queue, left.Prev, bigram.Left);
            TryAddBigram(buffer, symbols, queue, bigram.Left, left.Next);
        }

        for (int i = 0; i >= 0 && count > 0; i = symbols[i].Next)
        {
            ReadOnlySpan<char> piece = buffer.Slice(symbols[i].Start, symbols[i].Length);
            if (NormalTokens.TryGetValue(piece, out int id))
            {
                output.Add(id);
            }
            else
            {
                AddByteFallback(piece, output);
            }
        }
    }

    private void TryAddBigram(ReadOnlySpan<char> buffer, Symbol[] symbols, PriorityQueue<Bigram, (float Score, int Left)> queue, int left, int right)
    {
        if (left < 0 || right < 0)
        {
            return;
        }
        int length = symbols[left].Length + symbols[right].Length;
        if (NormalTokens.TryGetValue(buffer.Slice(symbols[left].Start, length), out int id))
        {
            queue.Enqueue(new Bigram(left, right, length), (scores[id], left));
        }
    }

    private void AddByteFallback(ReadOnlySpan<char> character, List<int> output)
    {
        Span<byte> utf8 = stackalloc byte[4];
        int byteCount = Encoding.UTF8.GetBytes(character, utf8);
        for (int b = 0; b < byteCount; b++)
        {
            int id = byteTokens[utf8[b]];
            if (id < 0)
            {
                id = Vocabulary.UnknownTokenId;
                if (id < 0)
                {
                    throw new TokenizerDataException(Vocabulary.Source, TokenizerMetadataKeys.UnknownTokenId,
                        $"{Vocabulary.Source}: character U+{char.ConvertToUtf32(character.ToString(), 0):X4} is not in the vocabulary, which has neither a byte token <0x{utf8[b]:X2}> nor an unknown token");
                }
                output.Add(id);
                return; // one unknown token stands for the whole character
            }
            output.Add(id);
        }
    }
}

using System.Buffers;
using System.Collections.Concurrent;
using System.Text;

namespace PluginEngine.Core.Tokenizer;

/// <summary>
/// Byte-level BPE ("gpt2" vocabularies: Llama 3, Qwen2, SmolLM, GPT-2). Text is split into words by the
/// pre-tokenizer, each word's UTF-8 bytes are written as GPT-2's printable byte characters, and adjacent pieces are
/// merged lowest merge rank first (ties: leftmost first). Results are cached per word, so long prompts cost one
/// merge per distinct word.
/// </summary>
internal sealed class ByteLevelBpeTokenizer : TokenizerBase
{
    private const int WordCacheLimit = 1 << 16;

    private readonly PreTokenizerKind preTokenizer;
    private readonly bool wholeWordFirst;
    private readonly int[] byteTokens = new int[256];
    private readonly Dictionary<long, (int Rank, int Merged)> merges;
    private readonly ConcurrentDictionary<string, int[]> wordCache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> wordCacheLookup;
    private int wordCacheCount; // ConcurrentDictionary.Count takes every lock; this counter is only a size bound

    private struct Symbol
    {
        public int Token;
        public int Length; // bytes; 0 once merged into the symbol on its left
        public int Prev;
        public int Next;
    }

    private readonly record struct Bigram(int Left, int Right, int Length, int Merged);

    /// <summary>Lowest rank first; on equal ranks the leftmost pair first.</summary>
    private sealed class BigramOrder : IComparer<(int Rank, int Left)>
    {
        public static readonly BigramOrder Instance = new();

        public int Compare((int Rank, int Left) x, (int Rank, int Left) y)
        {
            int byRank = x.Rank.CompareTo(y.Rank);
            return byRank != 0 ? byRank : x.Left.CompareTo(y.Left);
        }
    }

    private sealed class Scratch
    {
        public readonly List<Range> Words = new();
        public byte[] Bytes = new byte[256];
        public char[] Mapped = new char[256];
        public Symbol[] Symbols = new Symbol[256];
        public readonly List<int> WordTokens = new();
        public readonly PriorityQueue<Bigram, (int Rank, int Left)> Queue = new(BigramOrder.Instance);
    }

    [ThreadStatic]
    private static Scratch? scratch;

    public ByteLevelBpeTokenizer(TokenizerVocabulary vocabulary)
        : base(vocabulary, stripDecodedSpacePrefix: false)
    {
        preTokenizer = PreTokenizerRules.ForName(vocabulary.PreTokenizer);
        // Llama 3's tokenizer.json sets ignore_merges: a word that is itself a token is taken whole.
        wholeWordFirst = preTokenizer == PreTokenizerKind.Llama3;
        wordCacheLookup = wordCache.GetAlternateLookup<ReadOnlySpan<char>>();
        for (int b = 0; b < 256; b++)
        {
            byteTokens[b] = NormalTokens.TryGetValue([ByteLevelMapping.ByteToChar[b]], out int id) ? id : -1;
        }

        string[] mergeList = vocabulary.Merges!;
        merges = new Dictionary<long, (int, int)>(mergeList.Length);
        for (int rank = 0; rank < mergeList.Length; rank++)
        {
            string entry = mergeList[rank];
            // The separator is the first space after the first character ("a b"); llama.cpp splits the same way.
            int space = entry.Length > 1 ? entry.IndexOf(' ', 1) : -1;
            if (space < 0 || space == entry.Length - 1)
            {
                throw new TokenizerDataException(vocabulary.Source, TokenizerMetadataKeys.Merges, $"{vocabulary.Source}: '{TokenizerMetadataKeys.Merges}'[{rank}] = \"{entry}\" is not two pieces separated by a space");
            }
            ReadOnlySpan<char> left = entry.AsSpan(0, space);
            ReadOnlySpan<char> right = entry.AsSpan(space + 1);
            // A merge whose parts or result are not tokens can never produce a token: skip it.
            if (!NormalTokens.TryGetValue(left, out int leftId) || !NormalTokens.TryGetValue(right, out int rightId)
                || !NormalTokens.TryGetValue(string.Concat(left, right), out int mergedId))
            {
                continue;
            }
            merges.TryAdd(PairKey(leftId, rightId), (rank, mergedId));
        }
    }

    private static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    protected override void WritePiece(int id, string text, TokenType type, ArrayBufferWriter<byte> output)
    {
        Span<byte> one = stackalloc byte[4];
        foreach (Rune rune in text.EnumerateRunes())
        {
            if (rune.Value < ByteLevelMapping.CharToByte.Length && ByteLevelMapping.CharToByte[rune.Value] >= 0)
            {
                one[0] = (byte)ByteLevelMapping.CharToByte[rune.Value];
                output.Write(one[..1]);
            }
            else
            {
                // Not a byte character (a malformed vocabulary entry): keep the character itself.
                output.Write(one[..rune.EncodeToUtf8(one)]);
            }
        }
    }

    protected override void EncodeText(ReadOnlySpan<char> text, bool atStartOrAfterSpecial, List<int> output)
    {
        Scratch work = scratch ??= new Scratch();
        List<Range> words = work.Words;
        words.Clear();
        PreTokenizerRules.Split(text, preTokenizer, words);
        foreach (Range range in words)
        {
            ReadOnlySpan<char> word = text[range];
            int byteCount = Encoding.UTF8.GetMaxByteCount(word.Length);
            if (work.Bytes.Length < byteCount)
            {
                work.Bytes = new byte[byteCount * 2];
                work.Mapped = new char[byteCount * 2];
                work.Symbols = new Symbol[byteCount * 2];
            }
            byteCount = Encoding.UTF8.GetBytes(word, work.Bytes);
            Span<char> mapped = work.Mapped.AsSpan(0, byteCount);
            for (int i = 0; i < byteCount; i++)
            {
                mapped[i] = ByteLevelMapping.ByteToChar[work.Bytes[i]];
            }
            if (wordCacheLookup.TryGetValue(mapped, out int[]? cached))
            {
                output.AddRange(cached);
                continue;
            }
            List<int> wordTokens = work.WordTokens;
            wordTokens.Clear();
            EncodeWord(work, mapped, byteCount, wordTokens);
            output.AddRange(wordTokens);
            if (Volatile.Read(ref wordCacheCount) < WordCacheLimit && wordCacheLookup.TryAdd(mapped, wordTokens.ToArray()))
            {
                Interlocked.Increment(ref wordCacheCount);
            }
        }
    }

    private void EncodeWord(Scratch work, ReadOnlySpan<char> mapped, int byteCount, List<int> output)
    {
        if (wholeWordFirst && NormalTokens.TryGetValue(mapped, out int wholeId))
        {
            output.Add(wholeId);
            return;
        }
        Symbol[] symbols = work.Symbols;
        for (int i = 0; i < byteCount; i++)
        {
            symbols[i] = new Symbol { Token = byteTokens[work.Bytes[i]], Length = 1, Prev = i - 1, Next = i + 1 < byteCount ? i + 1 : -1 };
        }
        PriorityQueue<Bigram, (int Rank, int Left)> queue = work.Queue;
        queue.Clear();
        for (int i = 1; i < byteCount; i++)
        {
            TryAddBigram(symbols, queue, i - 1, i);
        }
        while (queue.TryDequeue(out Bigram bigram, out _))
        {
            ref Symbol left = ref symbols[bigram.Left];
            ref Symbol right = ref symbols[bigram.Right];
            if (left.Length == 0 || right.Length == 0 || left.Length + right.Length != bigram.Length)
            {
                continue; // stale: a side was merged elsewhere since this pair was queued
            }
            left.Token = bigram.Merged;
            left.Length += right.Length;
            right.Length = 0;
            left.Next = right.Next;
            if (right.Next >= 0)
            {
                symbols[right.Next].Prev = bigram.Left;
            }
            TryAddBigram(symbols, queue, left.Prev, bigram.Left);
            TryAddBigram(symbols, queue, bigram.Left, left.Next);
        }
        for (int i = 0; i >= 0 && byteCount > 0; i = symbols[i].Next)
        {
            int token = symbols[i].Token;
            if (token < 0)
            {
                // Only a single byte without a token can get here (merged symbols always have one).
                token = Vocabulary.UnknownTokenId;
                if (token < 0)
                {
                    throw new TokenizerDataException(Vocabulary.Source, TokenizerMetadataKeys.UnknownTokenId,
                        $"{Vocabulary.Source}: byte 0x{work.Bytes[i]:X2} has no token ('{mapped[i]}') in this byte-level vocabulary and there is no unknown token");
                }
            }
            output.Add(token);
        }
    }

    private void TryAddBigram(Symbol[] symbols, PriorityQueue<Bigram, (int Rank, int Left)> queue, int left, int right)
    {
        if (left < 0 || right < 0 || symbols[left].Token < 0 || symbols[right].Token < 0)
        {
            return;
        }
        if (merges.TryGetValue(PairKey(symbols[left].Token, symbols[right].Token), out var merge))
        {
            queue.Enqueue(new Bigram(left, right, symbols[left].Length + symbols[right].Length, merge.Merged), (merge.Rank, left));
        }
    }
}

/// <summary>
/// GPT-2's reversible byte↔character table: printable Latin-1 bytes stand for themselves, the other 68 bytes
/// (controls, space, 0x7F–0xA0, 0xAD) take the characters from U+0100 upward, in byte order.
/// </summary>
public static class ByteLevelMapping
{
    /// <summary>Character that stands for each byte.</summary>
    public static readonly char[] ByteToChar = BuildByteToChar();

    /// <summary>Byte for each character below U+0144, or -1 for characters that stand for no byte.</summary>
    public static readonly short[] CharToByte = BuildCharToByte();

    private static char[] BuildByteToChar()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }

    private static short[] BuildCharToByte()
    {
        var table = new short[256 + 68];
        Array.Fill(table, (short)-1);
        for (int b = 0; b < 256; b++)
        {
            table[ByteToChar[b]] = (short)b;
        }
        return table;
    }
}

using System.Collections;
using System.Globalization;

namespace PluginEngine.Core.Tokenizer;

/// <summary>Which tokenization algorithm a vocabulary is made for (GGUF <c>tokenizer.ggml.model</c>).</summary>
public enum TokenizerModelKind
{
    /// <summary>SentencePiece BPE (<c>"llama"</c>): score-based merges over characters, byte-fallback tokens.</summary>
    SentencePiece,

    /// <summary>Byte-level BPE (<c>"gpt2"</c>): regex pre-tokenizer, GPT-2 byte→unicode mapping, ranked merges.</summary>
    ByteLevelBpe,
}

/// <summary>Token types as stored in GGUF <c>tokenizer.ggml.token_type</c> (the SentencePiece piece types).</summary>
public enum TokenType
{
    /// <summary>Not set (treated like <see cref="Normal"/>).</summary>
    Undefined = 0,
    /// <summary>Ordinary text piece.</summary>
    Normal = 1,
    /// <summary>The unknown-token piece.</summary>
    Unknown = 2,
    /// <summary>Control token (BOS, EOS, chat markers): produced only by flags or when special tokens are parsed.</summary>
    Control = 3,
    /// <summary>User-defined token: always matched literally in input text.</summary>
    UserDefined = 4,
    /// <summary>Unused slot.</summary>
    Unused = 5,
    /// <summary>Byte-fallback token <c>&lt;0xNN&gt;</c>.</summary>
    Byte = 6,
}

/// <summary>GGUF metadata keys the tokenizer is built from.</summary>
public static class TokenizerMetadataKeys
{
    public const string Model = "tokenizer.ggml.model";
    public const string PreTokenizer = "tokenizer.ggml.pre";
    public const string Tokens = "tokenizer.ggml.tokens";
    public const string Scores = "tokenizer.ggml.scores";
    public const string TokenTypes = "tokenizer.ggml.token_type";
    public const string Merges = "tokenizer.ggml.merges";
    public const string BosTokenId = "tokenizer.ggml.bos_token_id";
    public const string EosTokenId = "tokenizer.ggml.eos_token_id";
    public const string UnknownTokenId = "tokenizer.ggml.unknown_token_id";
    public const string PaddingTokenId = "tokenizer.ggml.padding_token_id";
    public const string AddBosToken = "tokenizer.ggml.add_bos_token";
    public const string AddEosToken = "tokenizer.ggml.add_eos_token";
    public const string AddSpacePrefix = "tokenizer.ggml.add_space_prefix";
}

/// <summary>
/// Everything a tokenizer is built from, as plain data: the token table with scores/types, the merge list for
/// byte-level BPE, the special token ids and the flags that say what encoding adds. Independent of the GGUF reader:
/// build it with <see cref="FromMetadata"/> from any key lookup, or with an object initializer.
/// Token ids are indices into <see cref="Tokens"/>; a special id of -1 means "none".
/// </summary>
public sealed record TokenizerVocabulary
{
    /// <summary>The tokenization algorithm.</summary>
    public required TokenizerModelKind Model { get; init; }

    /// <summary>Where the vocabulary came from (a model file path), named in errors found while encoding.</summary>
    public string Source { get; init; } = "vocabulary";

    /// <summary>Pre-tokenizer name (GGUF <c>tokenizer.ggml.pre</c>): "llama-bpe", "qwen2", "default", …</summary>
    public string PreTokenizer { get; init; } = "default";

    /// <summary>Token texts, indexed by id (SentencePiece text uses U+2581 for spaces; byte-level BPE text uses the GPT-2 byte mapping).</summary>
    public required string[] Tokens { get; init; }

    /// <summary>SentencePiece merge scores per token (higher merges first); required for <see cref="TokenizerModelKind.SentencePiece"/>.</summary>
    public float[]? Scores { get; init; }

    /// <summary>GGUF token types per token (see <see cref="TokenType"/>); when absent, types are inferred (byte pieces, special ids).</summary>
    public int[]? TokenTypes { get; init; }

    /// <summary>Byte-level BPE merges, highest priority first, each "left right"; required for <see cref="TokenizerModelKind.ByteLevelBpe"/>.</summary>
    public string[]? Merges { get; init; }

    public int BosTokenId { get; init; } = -1;
    public int EosTokenId { get; init; } = -1;
    public int UnknownTokenId { get; init; } = -1;
    public int PaddingTokenId { get; init; } = -1;

    /// <summary>Whether encoding with special tokens requested prepends BOS.</summary>
    public bool AddBos { get; init; }

    /// <summary>Whether encoding with special tokens requested appends EOS.</summary>
    public bool AddEos { get; init; }

    /// <summary>SentencePiece: prepend a space to text at the start and after each special token (the "dummy prefix").</summary>
    public bool AddSpacePrefix { get; init; }

    /// <summary>The type of token <paramref name="id"/>, inferred when <see cref="TokenTypes"/> is absent.</summary>
    public TokenType GetTokenType(int id)
    {
        if (TokenTypes is { } types)
        {
            return (TokenType)types[id];
        }
        if (id == UnknownTokenId)
        {
            return TokenType.Unknown;
        }
        if (id == BosTokenId || id == EosTokenId || id == PaddingTokenId)
        {
            return TokenType.Control;
        }
        if (Model == TokenizerModelKind.SentencePiece && TryParseBytePiece(Tokens[id], out _))
        {
            return TokenType.Byte;
        }
        return TokenType.Normal;
    }

    /// <summary>Parses a SentencePiece byte-fallback piece <c>&lt;0xNN&gt;</c> (two hex digits).</summary>
    public static bool TryParseBytePiece(string text, out byte value)
    {
        value = 0;
        return text.Length == 6 && text.StartsWith("<0x", StringComparison.Ordinal) && text[5] == '>'
            && byte.TryParse(text.AsSpan(3, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }

    /// <summary>
    /// Checks internal consistency (array lengths, id ranges, types) and throws <see cref="TokenizerDataException"/>
    /// naming the offending GGUF key. <paramref name="source"/> names where the data came from (a file path).
    /// </summary>
    public void Validate(string source = "vocabulary")
    {
        if (Tokens.Length == 0)
        {
            throw new TokenizerDataException(source, TokenizerMetadataKeys.Tokens, $"{source}: '{TokenizerMetadataKeys.Tokens}' is empty");
        }
        if (Scores is not null && Scores.Length != Tokens.Length)
        {
            throw new TokenizerDataException(source, TokenizerMetadataKeys.Scores, $"{source}: '{TokenizerMetadataKeys.Scores}' has {Scores.Length} entries but '{TokenizerMetadataKeys.Tokens}' has {Tokens.Length}");
        }
        if (TokenTypes is not null)
        {
            if (TokenTypes.Length != Tokens.Length)
            {
                throw new TokenizerDataException(source, TokenizerMetadataKeys.TokenTypes, $"{source}: '{TokenizerMetadataKeys.TokenTypes}' has {TokenTypes.Length} entries but '{TokenizerMetadataKeys.Tokens}' has {Tokens.Length}");
            }
            for (int i = 0; i < TokenTypes.Length; i++)
            {
                if (TokenTypes[i] is < 0 or > 6)
                {
                    throw new TokenizerDataException(source, TokenizerMetadataKeys.TokenTypes, $"{source}: '{TokenizerMetadataKeys.TokenTypes}'[{i}] = {TokenTypes[i]} is not a token type (0..6)");
                }
            }
        }
        for (int i = 0; i < Tokens.Length; i++)
        {
            if (Tokens[i] is null)
            {
                throw new TokenizerDataException(source, TokenizerMetadataKeys.Tokens, $"{source}: '{TokenizerMetadataKeys.Tokens}'[{i}] is null");
            }
        }
        if (Model == TokenizerModelKind.SentencePiece && Scores is null)
        {
            throw new TokenizerDataException(source, TokenizerMetadataKeys.Scores, $"{source}: '{TokenizerMetadataKeys.Scores}' is required for a SentencePiece (\"llama\") vocabulary");
        }
        if (Model == TokenizerModelKind.ByteLevelBpe && Merges is null)
        {
            throw new TokenizerDataException(source, TokenizerMetadataKeys.Merges, $"{source}: '{TokenizerMetadataKeys.Merges}' is required for a byte-level BPE (\"gpt2\") vocabulary");
        }
        CheckId(BosTokenId, TokenizerMetadataKeys.BosTokenId, source);
        CheckId(EosTokenId, TokenizerMetadataKeys.EosTokenId, source);
        CheckId(UnknownTokenId, TokenizerMetadataKeys.UnknownTokenId, source);
        CheckId(PaddingTokenId, TokenizerMetadataKeys.PaddingTokenId, source);
        if (AddBos && BosTokenId < 0)
        {
            throw new TokenizerDataException(source, TokenizerMetadataKeys.AddBosToken, $"{source}: '{TokenizerMetadataKeys.AddBosToken}' is true but there is no '{TokenizerMetadataKeys.BosTokenId}'");
        }
        if (AddEos && EosTokenId < 0)
        {
            throw new TokenizerDataException(source, TokenizerMetadataKeys.AddEosToken, $"{source}: '{TokenizerMetadataKeys.AddEosToken}' is true but there is no '{TokenizerMetadataKeys.EosTokenId}'");
        }
    }

    private void CheckId(int id, string key, string source)
    {
        if (id < -1 || id >= Tokens.Length)
        {
            throw new TokenizerDataException(source, key, $"{source}: '{key}' = {id} is outside the vocabulary (0..{Tokens.Length - 1})");
        }
    }

    /// <summary>
    /// Builds a vocabulary from GGUF-style metadata. <paramref name="lookup"/> returns the value stored under a key, or
    /// null when the key is absent. Arrays may be any <see cref="IEnumerable"/> of the element values (string[],
    /// float[], int[], List&lt;object&gt;, …); integers may be any integral type. Defaults for absent keys follow
    /// llama.cpp: "llama" vocabularies add BOS and a space prefix with BOS=1, EOS=2, UNK=0; "gpt2" ones add neither
    /// except for the Llama 3 pre-tokenizer, which adds BOS. <paramref name="source"/> names the file in errors.
    /// </summary>
    public static TokenizerVocabulary FromMetadata(Func<string, object?> lookup, string source = "metadata")
    {
        ArgumentNullException.ThrowIfNull(lookup);
        string modelName = ReadString(lookup, TokenizerMetadataKeys.Model, source)
            ?? throw new TokenizerDataException(source, TokenizerMetadataKeys.Model, $"{source}: metadata key '{TokenizerMetadataKeys.Model}' is missing");
        TokenizerModelKind model = modelName switch
        {
            "llama" => TokenizerModelKind.SentencePiece,
            "gpt2" => TokenizerModelKind.ByteLevelBpe,
            _ => throw new TokenizerDataException(source, TokenizerMetadataKeys.Model, $"{source}: '{TokenizerMetadataKeys.Model}' = '{modelName}' is not supported (supported: llama, gpt2)"),
        };
        string pre = ReadString(lookup, TokenizerMetadataKeys.PreTokenizer, source) ?? "default";
        if (model == TokenizerModelKind.ByteLevelBpe)
        {
            try
            {
                PreTokenizerRules.ForName(pre);
            }
            catch (NotSupportedException e)
            {
                throw new TokenizerDataException(source, TokenizerMetadataKeys.PreTokenizer, $"{source}: {e.Message}");
            }
        }
        string[] tokens = ReadArray(lookup, TokenizerMetadataKeys.Tokens, source, (o, i) => o as string
            ?? throw new TokenizerDataException(source, TokenizerMetadataKeys.Tokens, $"{source}: '{TokenizerMetadataKeys.Tokens}'[{i}] is {Describe(o)}, expected a string"))
            ?? throw new TokenizerDataException(source, TokenizerMetadataKeys.Tokens, $"{source}: metadata key '{TokenizerMetadataKeys.Tokens}' is missing");
        float[]? scores = ReadArray(lookup, TokenizerMetadataKeys.Scores, source,
            (o, i) => ToFloat(o, TokenizerMetadataKeys.Scores, $"'{TokenizerMetadataKeys.Scores}'[{i}]", source));
        int[]? types = ReadArray(lookup, TokenizerMetadataKeys.TokenTypes, source,
            (o, i) => (int)ToInteger(o, TokenizerMetadataKeys.TokenTypes, $"'{TokenizerMetadataKeys.TokenTypes}'[{i}]", source));
        string[]? merges = ReadArray(lookup, TokenizerMetadataKeys.Merges, source, (o, i) => o as string
            ?? throw new TokenizerDataException(source, TokenizerMetadataKeys.Merges, $"{source}: '{TokenizerMetadataKeys.Merges}'[{i}] is {Describe(o)}, expected a string"));

        bool sentencePiece = model == TokenizerModelKind.SentencePiece;
        bool llama3Family = !sentencePiece && PreTokenizerRules.ForName(pre) == PreTokenizerKind.Llama3;
        // A default special id that the vocabulary is too small for means "none"; explicit ids are validated.
        int Default(int id) => id < tokens.Length ? id : -1;
        int bos = ReadId(lookup, TokenizerMetadataKeys.BosTokenId, source, Default(sentencePiece ? 1 : -1));
        bool addBosDefault = (sentencePiece || llama3Family) && bos >= 0;
        var vocabulary = new TokenizerVocabulary
        {
            Model = model,
            Source = source,
            PreTokenizer = pre,
            Tokens = tokens,
            Scores = scores,
            TokenTypes = types,
            Merges = merges,
            BosTokenId = bos,
            EosTokenId = ReadId(lookup, TokenizerMetadataKeys.EosTokenId, source, Default(sentencePiece ? 2 : -1)),
            UnknownTokenId = ReadId(lookup, TokenizerMetadataKeys.UnknownTokenId, source, Default(sentencePiece ? 0 : -1)),
            PaddingTokenId = ReadId(lookup, TokenizerMetadataKeys.PaddingTokenId, source, -1),
            AddBos = ReadBool(lookup, TokenizerMetadataKeys.AddBosToken, source, addBosDefault),
            AddEos = ReadBool(lookup, TokenizerMetadataKeys.AddEosToken, source, false),
            AddSpacePrefix = ReadBool(lookup, TokenizerMetadataKeys.AddSpacePrefix, source, sentencePiece),
        };
        vocabulary.Validate(source);
        return vocabulary;
    }

    private static string? ReadString(Func<string, object?> lookup, string key, string source) => lookup(key) switch
    {
        null => null,
        string s => s,
        var other => throw new TokenizerDataException(source, key, $"{source}: '{key}' is {Describe(other)}, expected a string"),
    };

    private static bool ReadBool(Func<string, object?> lookup, string key, string source, bool fallback) => lookup(key) switch
    {
        null => fallback,
        bool b => b,
        var other => throw new TokenizerDataException(source, key, $"{source}: '{key}' is {Describe(other)}, expected a bool"),
    };

    private static int ReadId(Func<string, object?> lookup, string key, string source, int fallback)
    {
        object? value = lookup(key);
        if (value is null)
        {
            return fallback;
        }
        long id = ToInteger(value, key, $"'{key}'", source);
        // GGUF stores ids as uint32; 0xFFFFFFFF (and -1) are used for "none".
        if (id == uint.MaxValue || id == -1)
        {
            return -1;
        }
        if (id < 0 || id > int.MaxValue)
        {
            throw new TokenizerDataException(source, key, $"{source}: '{key}' = {id} is not a token id");
        }
        return (int)id;
    }

    private static T[]? ReadArray<T>(Func<string, object?> lookup, string key, string source, Func<object?, int, T> convert)
    {
        object? value = lookup(key);
        switch (value)
        {
            case null:
                return null;
            case T[] typed:
                return typed;
            case string:
                throw new TokenizerDataException(source, key, $"{source}: '{key}' is a string, expected an array");
            case IEnumerable items:
                var list = new List<T>();
                int index = 0;
                foreach (object? item in items)
                {
                    list.Add(convert(item, index++));
                }
                return list.ToArray();
            default:
                throw new TokenizerDataException(source, key, $"{source}: '{key}' is {Describe(value)}, expected an array");
        }
    }

    private static long ToInteger(object? value, string key, string what, string source) => value switch
    {
        sbyte v => v,
        byte v => v,
        short v => v,
        ushort v => v,
        int v => v,
        uint v => v,
        long v => v,
        ulong v when v <= long.MaxValue => (long)v,
        _ => throw new TokenizerDataException(source, key, $"{source}: {what} is {Describe(value)}, expected an integer"),
    };

    private static float ToFloat(object? value, string key, string what, string source) => value switch
    {
        float v => v,
        double v => (float)v,
        int v => v,
        long v => v,
        _ => throw new TokenizerDataException(source, key, $"{source}: {what} is {Describe(value)}, expected a number"),
    };

    private static string Describe(object? value) => value is null ? "null" : $"a {value.GetType().Name}";
}

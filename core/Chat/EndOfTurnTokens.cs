using PluginEngine.Core.Gguf;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Core.Chat;

/// <summary>The tokens that end an assistant's turn: the vocabulary's EOS, its EOT/EOM ids, and the families' end-of-turn markers.</summary>
public static class EndOfTurnTokens
{
    /// <summary>Markers that end a turn in the template families (matched against control tokens of the vocabulary).</summary>
    public static IReadOnlyList<string> KnownMarkers { get; } =
        ["<|eot_id|>", "<|eom_id|>", "<|im_end|>", "</s>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<|end_of_text|>"];

    /// <summary>GGUF keys of end tokens besides EOS.</summary>
    public static IReadOnlyList<string> MetadataKeys { get; } = ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"];

    public static IReadOnlySet<int> FromModel(GgufFile file, ITokenizer tokenizer)
    {
        var ids = new HashSet<int>();
        if (tokenizer.EosTokenId >= 0) ids.Add(tokenizer.EosTokenId);
        foreach (var key in MetadataKeys)
            if (file.TryGet(key, out var v) && v.Type is not (GgufValueType.String or GgufValueType.Array) && v.AsInt64() is var id && id >= 0 && id < tokenizer.VocabularySize)
                ids.Add((int)id);
        var tokens = tokenizer.Vocabulary.Tokens;
        for (int i = 0; i < tokens.Length; i++)
            if (tokenizer.GetTokenType(i) == TokenType.Control && KnownMarkers.Contains(tokens[i]))
                ids.Add(i);
        return ids;
    }
}

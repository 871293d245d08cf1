namespace PluginEngine.Core.Tokenizer;

/// <summary>Creates the tokenizer that matches a vocabulary's model kind.</summary>
public static class Tokenizer
{
    /// <summary>
    /// Builds a tokenizer. Throws <see cref="TokenizerDataException"/> for inconsistent vocabularies (naming the key)
    /// and <see cref="NotSupportedException"/> for an unknown pre-tokenizer name in a vocabulary built in code
    /// (<see cref="TokenizerVocabulary.FromMetadata"/> reports that one as a <see cref="TokenizerDataException"/> too).
    /// </summary>
    public static ITokenizer Create(TokenizerVocabulary vocabulary)
    {
        ArgumentNullException.ThrowIfNull(vocabulary);
        vocabulary.Validate(vocabulary.Source);
        return vocabulary.Model switch
        {
            TokenizerModelKind.SentencePiece => new SentencePieceTokenizer(vocabulary),
            TokenizerModelKind.ByteLevelBpe => new ByteLevelBpeTokenizer(vocabulary),
            _ => throw new NotSupportedException($"tokenizer model {vocabulary.Model} is not supported"),
        };
    }
}

namespace PluginEngine.Core.Tokenizer;

/// <summary>
/// The tokenizer metadata is unusable: a key is missing, of the wrong type, inconsistent with another key (scores of
/// the wrong count, a BOS id outside the vocabulary), or names a model or pre-tokenizer this engine does not have.
/// <see cref="Key"/> is the GGUF key at fault and the message names the source (the model file). It is bad input, not
/// a bug: the model loader turns it into a model-format error and commands report it as a user error.
/// </summary>
public sealed class TokenizerDataException(string source, string key, string message) : Exception(message)
{
    /// <summary>Where the vocabulary came from (a model file path).</summary>
    public string File { get; } = source;

    /// <summary>The GGUF metadata key at fault, e.g. <c>tokenizer.ggml.bos_token_id</c>.</summary>
    public string Key { get; } = key;
}

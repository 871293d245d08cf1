using PluginEngine.Core.Gguf;
using PluginEngine.Core.Tokenizer;
using TokenizerDataException = PluginEngine.Core.Tokenizer.TokenizerDataException;

namespace PluginEngine.Core.Models;

/// <summary>Builds the tokenizer a GGUF file describes (tokenizer.ggml.* metadata).</summary>
public static class TokenizerFactory
{
    /// <summary>Creates the tokenizer; errors name the file and the key.</summary>
    public static ITokenizer FromGguf(GgufFile file) => Tokenizer.Tokenizer.Create(VocabularyFromGguf(file));

    /// <summary>
    /// The vocabulary stored in the file's tokenizer.ggml.* keys. Every problem is a <see cref="TokenizerDataException"/>
    /// naming the file and the key (a value of the wrong type or range included).
    /// </summary>
    public static TokenizerVocabulary VocabularyFromGguf(GgufFile file)
    {
        try
        {
            return TokenizerVocabulary.FromMetadata(key => file.TryGet(key, out var v) ? ToObject(v) : null, file.Path);
        }
        catch (GgufMetadataTypeException e)
        {
            throw new TokenizerDataException(file.Path, e.Key ?? "tokenizer.ggml", $"{file.Path}: {e.Message}");
        }
        catch (GgufMetadataRangeException e)
        {
            throw new TokenizerDataException(file.Path, e.Key ?? "tokenizer.ggml", $"{file.Path}: {e.Message}");
        }
    }

    /// <summary>A metadata value as the plain CLR object the vocabulary factory reads (string, number, bool, typed array).</summary>
    private static object? ToObject(GgufValue v) => v.Type switch
    {
        GgufValueType.String => v.AsString(),
        GgufValueType.Bool => v.AsBool(),
        GgufValueType.Float32 or GgufValueType.Float64 => v.AsFloat64(),
        GgufValueType.Array => v.ElementType switch
        {
            GgufValueType.String => v.AsStringArray(),
            GgufValueType.Float32 => v.AsFloat32Array(),
            GgufValueType.Int32 or GgufValueType.UInt32 or GgufValueType.Int8 or GgufValueType.UInt8
                or GgufValueType.Int16 or GgufValueType.UInt16 => v.AsInt32Array(),
            _ => v.AsArray().Select(ToObject).ToArray(),
        },
        _ => v.AsInt64(),
    };
}

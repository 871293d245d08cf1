namespace PluginEngine.Extensions.AI;

/// <summary>The loaded model as <see cref="PluginEngineChatClient.GetService"/> describes it.</summary>
/// <param name="Name">general.name, or the file name.</param>
/// <param name="Path">The GGUF file.</param>
/// <param name="Architecture">general.architecture.</param>
/// <param name="Layers">Transformer blocks.</param>
/// <param name="VocabularySize">Tokens in the vocabulary.</param>
/// <param name="TrainedContextLength">The model's context length.</param>
/// <param name="ContextSize">Positions of this client's KV cache.</param>
/// <param name="ChatTemplate">Where the chat template came from.</param>
/// <param name="Schedule">Which device runs which layers.</param>
/// <param name="HasRandomWeights">A generated model (its text is noise).</param>
/// <param name="Metadata">Every scalar and string metadata value of the file (arrays summarized), by key.</param>
public sealed record PluginEngineModelInfo(string Name, string Path, string Architecture, int Layers, int VocabularySize, int TrainedContextLength,
    int ContextSize, string ChatTemplate, string Schedule, bool HasRandomWeights, IReadOnlyDictionary<string, string> Metadata);

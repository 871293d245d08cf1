using PluginEngine.Core.Gguf;
using PluginEngine.Core.Models;

namespace PluginEngine.Tests.Chat;

/// <summary>
/// Small generated chat models: random weights, the synthetic SentencePiece vocabulary (&lt;s&gt;, &lt;/s&gt; control
/// tokens) and a TinyLlama-style template of this project's own that ends every turn with the EOS text, so the turn
/// boundary after an answer is a special token.
/// </summary>
internal static class ChatTestModels
{
    public const string Template = """
        {%- for message in messages -%}
            {{- '<|' ~ message['role'] ~ '|>\n' ~ message['content'] ~ eos_token ~ '\n' -}}
        {%- endfor -%}
        {%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}
        """;

    public static SyntheticModelSpec Spec(string? template = Template, int? endOfTurnToken = null)
    {
        var extra = new Dictionary<string, GgufValue>();
        if (template is not null) extra["tokenizer.chat_template"] = GgufValue.String(template);
        if (endOfTurnToken is { } id) extra["tokenizer.ggml.eot_token_id"] = GgufValue.UInt32((uint)id);
        return new SyntheticModelSpec
        {
            Name = "chat-test", VocabularySize = 512, EmbeddingLength = 128, BlockCount = 2, HeadCount = 4, KvHeadCount = 2,
            FeedForwardLength = 256, ContextLength = 512, Seed = 99, ExtraMetadata = extra,
        };
    }
}

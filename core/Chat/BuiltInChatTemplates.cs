namespace PluginEngine.Core.Chat;

/// <summary>
/// Chat templates for <c>--chat-template NAME</c>, written for this project in the Jinja subset of
/// <see cref="Jinja.JinjaTemplate"/>. Each renders a conversation exactly as llama.cpp's built-in formatter of the same
/// family does (the tests compare them). None writes the BOS token at the start: the tokenizer adds it when the
/// vocabulary asks for it (<c>tokenizer.ggml.add_bos_token</c>), as llama.cpp does.
/// </summary>
public static class BuiltInChatTemplates
{
    /// <summary>ChatML (Qwen, SmolLM, Hermes, …): <c>&lt;|im_start|&gt;role\n…&lt;|im_end|&gt;\n</c>.</summary>
    public const string ChatMl = """
        {%- for message in messages -%}
            {{- '<|im_start|>' ~ message.role ~ '\n' ~ message.content ~ '<|im_end|>\n' -}}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{- '<|im_start|>assistant\n' -}}
        {%- endif -%}
        """;

    /// <summary>Llama 3.x: header ids around the role, content trimmed, <c>&lt;|eot_id|&gt;</c> after each turn.</summary>
    public const string Llama3 = """
        {%- for message in messages -%}
            {{- '<|start_header_id|>' ~ message.role ~ '<|end_header_id|>\n\n' ~ (message.content | trim) ~ '<|eot_id|>' -}}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {%- endif -%}
        """;

    /// <summary>
    /// Llama 2 chat: <c>[INST] &lt;&lt;SYS&gt;&gt;\nsystem\n&lt;&lt;/SYS&gt;&gt;\n\nuser [/INST]answer&lt;/s&gt;[INST] …</c>
    /// (llama.cpp's "llama2-sys").
    /// </summary>
    public const string Llama2 = """
        {%- set ns = namespace(open=true) -%}
        {{- '[INST] ' -}}
        {%- for message in messages -%}
            {%- if not ns.open -%}
                {{- '[INST] ' -}}
                {%- set ns.open = true -%}
            {%- endif -%}
            {%- if message.role == 'system' -%}
                {{- '<<SYS>>\n' ~ message.content ~ '\n<</SYS>>\n\n' -}}
            {%- elif message.role == 'user' -%}
                {{- message.content ~ ' [/INST]' -}}
            {%- else -%}
                {{- message.content ~ eos_token -}}
                {%- set ns.open = false -%}
            {%- endif -%}
        {%- endfor -%}
        """;

    /// <summary>
    /// Mistral Instruct (v0.1/v0.2) and other Llama-2-style templates without a system block: a system message is written
    /// in front of the first user message, then <c>[INST] user [/INST]answer&lt;/s&gt;</c> (llama.cpp's "llama2").
    /// </summary>
    public const string Mistral = """
        {%- set ns = namespace(open=true) -%}
        {{- '[INST] ' -}}
        {%- for message in messages -%}
            {%- if not ns.open -%}
                {{- '[INST] ' -}}
                {%- set ns.open = true -%}
            {%- endif -%}
            {%- if message.role == 'system' -%}
                {{- message.content ~ '\n' -}}
            {%- elif message.role == 'user' -%}
                {{- message.content ~ ' [/INST]' -}}
            {%- else -%}
                {{- message.content ~ eos_token -}}
                {%- set ns.open = false -%}
            {%- endif -%}
        {%- endfor -%}
        """;

    /// <summary>Zephyr / TinyLlama chat: <c>&lt;|role|&gt;\ncontent</c> + EOS + newline (llama.cpp's "zephyr" with EOS &lt;|endoftext|&gt;).</summary>
    public const string Zephyr = """
        {%- for message in messages -%}
            {{- '<|' ~ message.role ~ '|>\n' ~ message.content ~ eos_token ~ '\n' -}}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{- '<|assistant|>\n' -}}
        {%- endif -%}
        """;

    /// <summary>Gemma: system text goes in front of the next user turn; the assistant is "model"; content trimmed.</summary>
    public const string Gemma = """
        {%- set ns = namespace(system='') -%}
        {%- for message in messages -%}
            {%- if message.role == 'system' -%}
                {%- set ns.system = message.content | trim -%}
            {%- else -%}
                {%- set role = 'model' if message.role == 'assistant' else message.role -%}
                {{- '<start_of_turn>' ~ role ~ '\n' -}}
                {%- if ns.system and role != 'model' -%}
                    {{- ns.system ~ '\n\n' -}}
                    {%- set ns.system = '' -%}
                {%- endif -%}
                {{- (message.content | trim) ~ '<end_of_turn>\n' -}}
            {%- endif -%}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{- '<start_of_turn>model\n' -}}
        {%- endif -%}
        """;

    /// <summary>Phi-3: <c>&lt;|role|&gt;\ncontent&lt;|end|&gt;\n</c>.</summary>
    public const string Phi3 = """
        {%- for message in messages -%}
            {{- '<|' ~ message.role ~ '|>\n' ~ message.content ~ '<|end|>\n' -}}
        {%- endfor -%}
        {%- if add_generation_prompt -%}
            {{- '<|assistant|>\n' -}}
        {%- endif -%}
        """;

    /// <summary>Every built-in template by name (names are case-insensitive; tinyllama is zephyr).</summary>
    public static IReadOnlyDictionary<string, string> ByName { get; } = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        ["llama3"] = Llama3,
        ["chatml"] = ChatMl,
        ["mistral"] = Mistral,
        ["llama2"] = Llama2,
        ["zephyr"] = Zephyr,
        ["tinyllama"] = Zephyr,
        ["gemma"] = Gemma,
        ["phi3"] = Phi3,
    };

    /// <summary>"llama3, chatml, …" for error messages and help.</summary>
    public static string Names => string.Join(", ", ByName.Keys);
}

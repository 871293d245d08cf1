using PluginEngine.Core.Chat.Jinja;
using PluginEngine.Core.Gguf;

namespace PluginEngine.Core.Chat;

/// <summary>
/// A chat template ready to format conversations: the model's own <c>tokenizer.chat_template</c> or a built-in or file
/// override, interpreted by <see cref="JinjaTemplate"/>. <see cref="Render"/> turns messages into prompt text.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>GGUF key of the model's template.</summary>
    public const string MetadataKey = "tokenizer.chat_template";

    private readonly JinjaTemplate _template;

    private ChatTemplate(string name, string source, JinjaTemplate template)
    {
        Name = name;
        Source = source;
        _template = template;
    }

    /// <summary>Where the template came from: "the model's tokenizer.chat_template", "built-in chatml", "file x.jinja".</summary>
    public string Name { get; }

    /// <summary>The Jinja source.</summary>
    public string Source { get; }

    /// <summary>Parses <paramref name="source"/>; a syntax error names <paramref name="name"/>, the line and the column.</summary>
    public static ChatTemplate Parse(string source, string name)
    {
        try
        {
            return new ChatTemplate(name, source, JinjaTemplate.Parse(source));
        }
        catch (TemplateException e)
        {
            throw new ChatFormatException($"{name}: {e.Message}; choose another with --chat-template NAME|FILE (NAME: {BuiltInChatTemplates.Names})", e);
        }
    }

    /// <summary>A built-in template by name (<see cref="BuiltInChatTemplates"/>).</summary>
    public static bool TryGetBuiltIn(string name, out ChatTemplate template)
    {
        template = null!;
        if (!BuiltInChatTemplates.ByName.TryGetValue(name, out var source)) return false;
        template = Parse(source, $"built-in {name.ToLowerInvariant()}");
        return true;
    }

    /// <summary>
    /// The template to use: <paramref name="overrideNameOrFile"/> (a built-in name, or a file holding a Jinja template) when
    /// given, else the model's <c>tokenizer.chat_template</c>. Every failure says what the choices are.
    /// </summary>
    public static ChatTemplate Resolve(GgufFile model, string? overrideNameOrFile)
    {
        if (!string.IsNullOrEmpty(overrideNameOrFile))
        {
            if (TryGetBuiltIn(overrideNameOrFile, out var builtIn)) return builtIn;
            if (File.Exists(overrideNameOrFile)) return Parse(File.ReadAllText(overrideNameOrFile), $"chat template file {overrideNameOrFile}");
            throw new ChatFormatException($"--chat-template {overrideNameOrFile}: neither a built-in template ({BuiltInChatTemplates.Names}) nor an existing file");
        }
        if (model.TryGet(MetadataKey, out var value) && value.Type == GgufValueType.String && value.AsString() is { Length: > 0 } source)
            return Parse(source, $"the model's {MetadataKey} ({model.Path})");
        throw new ChatFormatException(
            $"{model.Path} has no chat template ({MetadataKey}); pass --chat-template NAME|FILE (NAME: {BuiltInChatTemplates.Names}, or a file holding a Jinja chat template)");
    }

    /// <summary>
    /// Formats <paramref name="messages"/>. <paramref name="addGenerationPrompt"/> appends the assistant header that asks
    /// the model to answer. Errors: no messages, a role outside <see cref="ChatRoles.All"/>, a template that raises or fails.
    /// </summary>
    public string Render(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt, string bosToken, string eosToken)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (messages.Count == 0) throw new ChatFormatException("the conversation has no messages; give at least one");
        var list = new List<object?>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i] ?? throw new ChatFormatException($"message {i} is null");
            if (!ChatRoles.All.Contains(m.Role))
                throw new ChatFormatException($"message {i} has role '{m.Role}'; the roles are {string.Join(", ", ChatRoles.All)}");
            list.Add(new Dictionary<string, object?>(StringComparer.Ordinal) { ["role"] = m.Role, ["content"] = m.Content ?? "" });
        }
        var variables = new Dictionary<string, object?>(StringComparer.Ordinal)
        {
            ["messages"] = list,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = bosToken,
            ["eos_token"] = eosToken,
        };
        try
        {
            return _template.Render(variables);
        }
        catch (TemplateRaisedException e)
        {
            throw new ChatFormatException($"{Name} refused the conversation: {e.Message}", e);
        }
        catch (TemplateException e)
        {
            throw new ChatFormatException($"{Name}: {e.Message}", e);
        }
    }
}

using System.Text;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Tokenizer;

namespace PluginEngine.Core.Chat;

/// <summary>
/// A conversation rendered by a chat template: the prompt text, and the positions (in <see cref="Text"/>) no special
/// token may cross because the text there came from a message, not from the template.
/// </summary>
public sealed record ChatPrompt(string Text, int[] LiteralBreaks);

/// <summary>
/// Turns messages into prompt tokens the way a model expects them: renders the chat template with the generation prompt,
/// adds BOS as the vocabulary asks (unless the template already wrote it), and keeps control-token text that appears
/// inside a message from becoming special tokens (unless asked to). Shared by <see cref="ChatSession"/> and the server
/// (docs/chat.md, docs/serve.md). Immutable after construction: safe to use from many threads.
/// </summary>
public sealed class ChatPromptFormatter
{
    /// <summary>Inserted into control-token text of messages before rendering; marks positions no special token may cross.</summary>
    private const char LiteralMark = '\uFDD0';

    private readonly ITokenizer _tokenizer;
    private readonly string _bosText, _eosText;
    private readonly string[] _specialTexts; // control/unknown token texts, longest first

    public ChatPromptFormatter(ITokenizer tokenizer, ChatTemplate template)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(template);
        _tokenizer = tokenizer;
        Template = template;
        var vocab = tokenizer.Vocabulary;
        _bosText = vocab.BosTokenId >= 0 ? vocab.Tokens[vocab.BosTokenId] : "";
        _eosText = vocab.EosTokenId >= 0 ? vocab.Tokens[vocab.EosTokenId] : "";
        _specialTexts = Enumerable.Range(0, tokenizer.VocabularySize)
            .Where(i => tokenizer.GetTokenType(i) is TokenType.Control or TokenType.Unknown && vocab.Tokens[i].Length > 1)
            .Select(i => vocab.Tokens[i]).Distinct().OrderByDescending(t => t.Length).ToArray();
    }

    /// <summary>A formatter for a loaded model: its own template, or <paramref name="templateOverride"/> (a built-in name or a file).</summary>
    public static ChatPromptFormatter ForModel(LoadedModel model, string? templateOverride = null)
        => new(model.Tokenizer, ChatTemplate.Resolve(model.File, templateOverride));

    public ChatTemplate Template { get; }

    public ITokenizer Tokenizer => _tokenizer;

    /// <summary>
    /// Renders the conversation with the generation prompt. Unless special tokens in messages are wanted, control-token
    /// text inside a message gets a mark after its first character before rendering; the marks are removed afterwards
    /// and their positions become literal breaks, so the tokenizer cannot turn that text into special tokens.
    /// </summary>
    public ChatPrompt Render(IReadOnlyList<ChatTurn> messages, bool parseSpecialInMessages = false)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = parseSpecialInMessages ? messages : messages.Select(m => m is null ? m! : m with { Content = MarkSpecialText(m.Content ?? "") }).ToList();
        string rendered = Template.Render(turns, addGenerationPrompt: true, _bosText, _eosText);
        if (parseSpecialInMessages || rendered.IndexOf(LiteralMark) < 0) return new ChatPrompt(rendered, []);
        var breaks = new List<int>();
        var clean = new StringBuilder(rendered.Length);
        foreach (char c in rendered)
        {
            if (c == LiteralMark) breaks.Add(clean.Length);
            else clean.Append(c);
        }
        return new ChatPrompt(clean.ToString(), breaks.ToArray());
    }

    /// <summary>The whole prompt's tokens: BOS as the vocabulary asks, unless the template already wrote it.</summary>
    public int[] Encode(ChatPrompt prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        bool addBos = _tokenizer.Vocabulary.AddBos && !(_bosText.Length > 0 && prompt.Text.StartsWith(_bosText, StringComparison.Ordinal));
        return _tokenizer.Encode(prompt.Text, addBos, prompt.LiteralBreaks);
    }

    /// <summary>The prompt tokens of <paramref name="messages"/> as a fresh conversation evaluates them.</summary>
    public int[] Encode(IReadOnlyList<ChatTurn> messages, bool parseSpecialInMessages = false) => Encode(Render(messages, parseSpecialInMessages));

    /// <summary>
    /// A plain text prompt (no template; the OpenAI completions endpoint): BOS as the vocabulary asks, control-token text
    /// in <paramref name="text"/> stays text.
    /// </summary>
    public int[] EncodePlainText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _tokenizer.Encode(text, _tokenizer.Vocabulary.AddBos, parseSpecial: false);
    }

    private string MarkSpecialText(string content)
    {
        if (content.Contains(LiteralMark)) content = content.Replace(LiteralMark, '\uFFFD'); // a noncharacter; never meaningful text
        foreach (var special in _specialTexts)
        {
            if (!content.Contains(special, StringComparison.Ordinal)) continue;
            content = content.Replace(special, special[0] + LiteralMark.ToString() + special[1..], StringComparison.Ordinal);
        }
        return content;
    }
}

using System.Text;
using LLama;
using PluginEngine.Core.Chat;
using Xunit;

namespace PluginEngine.Tests.Chat;

/// <summary>
/// The built-in templates (written for this project in the Jinja subset) against llama.cpp's own formatter for the same
/// family, <c>llama_chat_apply_template</c> through LLamaSharp 0.30.0: same messages, identical strings, with and without
/// the generation prompt. Skipped with the reason when llama.cpp's native library cannot load here.
/// </summary>
public class ChatTemplateOracleTests
{
    /// <summary>Our name, llama.cpp's name for the same format, and the EOS text the family uses.</summary>
    public static TheoryData<string, string, string> Families() => new()
    {
        { "chatml", "chatml", "<|im_end|>" },
        { "llama3", "llama3", "<|eot_id|>" },
        { "llama2", "llama2-sys", "</s>" },
        { "mistral", "llama2", "</s>" },
        { "zephyr", "zephyr", "<|endoftext|>" },
        { "gemma", "gemma", "<eos>" },
        { "phi3", "phi3", "<|endoftext|>" },
    };

    /// <summary>Conversations with the awkward parts: leading/trailing spaces, newlines, several turns, no system message, unicode.</summary>
    public static IEnumerable<(string Role, string Content)[]> Conversations()
    {
        yield return [("user", "Hello")];
        yield return [("system", "You are terse. "), ("user", " Hello there "), ("assistant", " Hi! "), ("user", "Line one\nline two")];
        yield return [("user", "first"), ("assistant", "answer one"), ("user", "second"), ("assistant", "answer two"), ("user", "third")];
        yield return [("system", "Be kind.\n\nAlways."), ("user", "Grüße 🦙 «quotes» 'single' \"double\""), ("assistant", "\n  indented\n"), ("user", "{{ not jinja }} {% neither %}")];
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Built_in_template_renders_exactly_as_llama_cpp(string ours, string llamaCppName, string eos)
    {
        if (Golden.LlamaCppOracle.UnavailableReason is { } reason) Assert.Skip(reason);
        Assert.True(ChatTemplate.TryGetBuiltIn(ours, out var template));
        int compared = 0;
        foreach (var conversation in Conversations())
        {
            foreach (bool addAssistant in new[] { true, false })
            {
                string expected = LlamaCpp(llamaCppName, conversation, addAssistant);
                string actual = template.Render(conversation.Select(m => new ChatTurn(m.Role, m.Content)).ToList(), addAssistant, "<s>", eos);
                Assert.True(expected == actual,
                    $"{ours} vs llama.cpp {llamaCppName} (add_generation_prompt={addAssistant}):\nllama.cpp: {Escape(expected)}\nours:      {Escape(actual)}");
                compared++;
            }
        }
        Assert.Equal(8, compared);
    }

    /// <summary>
    /// llama.cpp's own detection, given our template's text instead of a name, picks the same family: the templates carry
    /// the markers real templates of that family carry. (Zephyr and Phi-3 build the role marker from the role name, so
    /// their text has no literal "&lt;|user|&gt;" to detect; they are covered by name above.)
    /// </summary>
    [Theory]
    [InlineData("chatml", "chatml")]
    [InlineData("llama3", "llama3")]
    [InlineData("gemma", "gemma")]
    [InlineData("llama2", "llama2-sys")]
    [InlineData("mistral", "llama2")]
    public void Llama_cpp_detects_the_family_from_our_template_text(string ours, string llamaCppName)
    {
        if (Golden.LlamaCppOracle.UnavailableReason is { } reason) Assert.Skip(reason);
        Assert.True(ChatTemplate.TryGetBuiltIn(ours, out var template));
        foreach (var conversation in Conversations())
            Assert.Equal(LlamaCpp(llamaCppName, conversation, true), LlamaCpp(template.Source, conversation, true));
    }

    /// <summary>The comparison can fail: different families render differently (guards against a vacuous oracle).</summary>
    [Fact]
    public void Different_families_render_differently()
    {
        if (Golden.LlamaCppOracle.UnavailableReason is { } reason) Assert.Skip(reason);
        Assert.True(ChatTemplate.TryGetBuiltIn("chatml", out var chatml));
        var conversation = Conversations().First();
        Assert.NotEqual(LlamaCpp("llama3", conversation, true), chatml.Render(conversation.Select(m => new ChatTurn(m.Role, m.Content)).ToList(), true, "<s>", "</s>"));
        Assert.Equal(LlamaCpp("chatml", conversation, true), chatml.Render(conversation.Select(m => new ChatTurn(m.Role, m.Content)).ToList(), true, "<s>", "</s>"));
    }

    internal static string LlamaCpp(string templateOrName, IEnumerable<(string Role, string Content)> messages, bool addAssistant)
    {
        var template = new LLamaTemplate(templateOrName) { AddAssistant = addAssistant };
        foreach (var (role, content) in messages) template.Add(role, content);
        return Encoding.UTF8.GetString(template.Apply());
    }

    internal static string Escape(string s) => s.Replace("\n", "\\n").Replace("\t", "\\t");
}

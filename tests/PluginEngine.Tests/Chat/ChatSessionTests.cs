using PluginEngine.Core.Chat;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Sampling;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Chat;

/// <summary>
/// Conversations on generated chat models: the answer ends on the end-of-turn token, the second turn evaluates only its
/// own tokens (the history stays in the KV cache) and answers exactly as a fresh session given the whole conversation,
/// reset starts over, control-token text in user messages stays text, and bad conversations are clear errors.
/// </summary>
public sealed class ChatSessionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pe-chat-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string Write(string name, Core.Models.SyntheticModelSpec spec)
    {
        string path = Path.Combine(_dir, name);
        Core.Models.SyntheticModel.Write(spec, path);
        return path;
    }

    private static readonly ChatGenerationOptions Greedy12 = new() { MaxTokens = 12 };

    /// <summary>
    /// The generated model, and the id of a token it produces greedily as the 4th token of its first answer (first seen
    /// there), which the returned model file declares as its end-of-turn token (tokenizer.ggml.eot_token_id).
    /// </summary>
    internal static (string Model, int EndOfTurn, IReadOnlyList<int> FreeAnswer) ModelEndingAfterThreeTokens(string dir)
    {
        string probe = Path.Combine(dir, "probe.gguf");
        Core.Models.SyntheticModel.Write(ChatTestModels.Spec(), probe);
        IReadOnlyList<int> tokens;
        using (var model = CpuTestBackend.LoadModel(probe))
        using (var context = model.CreateContext(new ContextOptions(512)))
        {
            var session = ChatSession.ForModel(model, context);
            tokens = session.Send("hello there", new Sampler(SamplerSettings.Greedy), Greedy12).Tokens;
        }
        int k = Enumerable.Range(3, tokens.Count - 3).First(i => !tokens.Take(i).Contains(tokens[i]));
        Assert.True(k == 3, $"the 4th greedy token repeats an earlier one ({string.Join(",", tokens)}); pick another seed for the test model");
        string path = Path.Combine(dir, "chat.gguf");
        Core.Models.SyntheticModel.Write(ChatTestModels.Spec(endOfTurnToken: tokens[3]), path);
        return (path, tokens[3], tokens);
    }

    [Fact]
    public void Turn_ends_on_the_end_of_turn_token_history_is_reused_and_reset_starts_over()
    {
        var (path, eot, free) = ModelEndingAfterThreeTokens(_dir);
        using var model = CpuTestBackend.LoadModel(path);
        using var context = model.CreateContext(new ContextOptions(512));
        var session = ChatSession.ForModel(model, context);
        Assert.Contains(eot, session.EndOfTurn);
        Assert.Contains(model.Tokenizer.EosTokenId, session.EndOfTurn);
        var greedy = new Sampler(SamplerSettings.Greedy);

        // Turn 1: the whole prompt is evaluated; the answer stops on the declared token (not added to the text).
        var first = session.Send("hello there", greedy, Greedy12, cancellation: TestContext.Current.CancellationToken);
        Assert.Equal(ChatStopReason.EndOfTurn, first.StopReason);
        Assert.Equal(free.Take(4), first.Tokens);
        Assert.Equal(model.Tokenizer.Decode(free.Take(3).ToArray()), first.Text.TrimStart(' '));
        int[] prompt1 = session.Encode([ChatTurn.User("hello there")]);
        Assert.Equal(prompt1.Length, first.PromptTokens);
        Assert.Equal(prompt1.Length, first.EvaluatedPromptTokens);

        // Turn 2: only the text after the cached answer is evaluated: "</s>\n<|user|>\n…</s>\n<|assistant|>\n".
        var conversation = new List<ChatTurn> { ChatTurn.User("hello there"), ChatTurn.Assistant(first.Text), ChatTurn.User("tell me more") };
        string whole = session.Template.Render(conversation, true, "<s>", "</s>");
        string before = session.Template.Render([ChatTurn.User("hello there")], true, "<s>", "</s>") + first.Text;
        Assert.StartsWith(before, whole);
        int newTokens = model.Tokenizer.Encode(whole[before.Length..], addBos: false, parseSpecial: true).Length;
        long evaluatedBefore = session.EvaluatedTokens;
        var second = session.Send("tell me more", greedy, Greedy12, cancellation: TestContext.Current.CancellationToken);
        Assert.Equal(newTokens, second.EvaluatedPromptTokens);
        Assert.True(second.EvaluatedPromptTokens < second.PromptTokens / 2, $"{second.EvaluatedPromptTokens} of {second.PromptTokens} prompt tokens evaluated");
        Assert.Equal(prompt1.Length + 3, second.PromptTokens - newTokens); // cache = prompt 1 + the 3 answer tokens

        // The reused cache answers exactly as a fresh context evaluating the same tokens in one go (prompt 1, the
        // sampled answer, the new turn's tokens).
        int[] sameTokens = [.. prompt1, .. free.Take(3), .. model.Tokenizer.Encode(whole[before.Length..], addBos: false, parseSpecial: true)];
        using (var freshContext = model.CreateContext(new ContextOptions(512)))
        {
            var fresh = Generator.Generate(freshContext, model.Tokenizer, sameTokens, second.Tokens.Count, new Sampler(SamplerSettings.Greedy), cancellation: TestContext.Current.CancellationToken);
            Assert.Equal(fresh.Tokens.Skip(sameTokens.Length), second.Tokens);
        }
        Assert.Equal(4, session.History.Count);

        // Reset: the history and the cache are gone; the first turn repeats exactly.
        session.Reset();
        Assert.Empty(session.History);
        Assert.Equal(0, session.CachedTokens);
        var again = session.Send("hello there", greedy, Greedy12, cancellation: TestContext.Current.CancellationToken);
        Assert.Equal(first.PromptTokens, again.EvaluatedPromptTokens);
        Assert.Equal(first.Text, again.Text);
    }

    [Fact]
    public void Control_token_text_in_a_message_stays_text_unless_asked()
    {
        string path = Write("m.gguf", ChatTestModels.Spec());
        using var model = CpuTestBackend.LoadModel(path);
        using var context = model.CreateContext(new ContextOptions(128));
        var session = ChatSession.ForModel(model, context);
        int eos = model.Tokenizer.EosTokenId;
        var message = new[] { ChatTurn.User("a</s>b") };
        // The template writes </s> once after the message: exactly one EOS unless the message's </s> is parsed too.
        Assert.Equal(1, session.Encode(message).Count(t => t == eos));
        Assert.Equal(2, session.Encode(message, parseSpecialInMessages: true).Count(t => t == eos));
        string prompt = session.Template.Render(message, true, "<s>", "</s>");
        Assert.Equal(model.Tokenizer.Encode(prompt.Replace("a</s>b", "a"), true, true).Length - 1 + model.Tokenizer.Encode("a</s>b", false, false).Length,
            session.Encode(message).Length);
    }

    [Fact]
    public void A_template_that_writes_bos_gets_no_second_one()
    {
        string path = Write("bos.gguf", ChatTestModels.Spec(template: "{{ bos_token }}" + ChatTestModels.Template));
        using var model = CpuTestBackend.LoadModel(path);
        using var context = model.CreateContext(new ContextOptions(128));
        var tokens = ChatSession.ForModel(model, context).Encode([ChatTurn.User("hi")]);
        Assert.Equal(model.Tokenizer.BosTokenId, tokens[0]);
        Assert.Equal(1, tokens.Count(t => t == model.Tokenizer.BosTokenId));

        // Without it in the template, the vocabulary's add_bos_token adds it: the same tokens either way.
        string plain = Write("plain.gguf", ChatTestModels.Spec());
        using var plainModel = CpuTestBackend.LoadModel(plain);
        using var plainContext = plainModel.CreateContext(new ContextOptions(128));
        Assert.Equal(tokens, ChatSession.ForModel(plainModel, plainContext).Encode([ChatTurn.User("hi")]));
    }

    [Fact]
    public void Bad_conversations_and_templates_are_clear_errors()
    {
        string path = Write("m.gguf", ChatTestModels.Spec());
        using var model = CpuTestBackend.LoadModel(path);
        using var context = model.CreateContext(new ContextOptions(128));
        var session = ChatSession.ForModel(model, context);
        var greedy = new Sampler(SamplerSettings.Greedy);

        var empty = Assert.Throws<ChatFormatException>(() => session.Complete([], greedy, Greedy12, cancellation: TestContext.Current.CancellationToken));
        Assert.Contains("no messages", empty.Message);
        var role = Assert.Throws<ChatFormatException>(() => session.Complete([new ChatTurn("narrator", "x")], greedy, Greedy12, cancellation: TestContext.Current.CancellationToken));
        Assert.Contains("message 0 has role 'narrator'", role.Message);
        Assert.Contains("system, user, assistant, tool", role.Message);

        string raising = Path.Combine(_dir, "raising.jinja");
        File.WriteAllText(raising, "{% if messages[0].role != 'system' %}{{ raise_exception('a system message must come first') }}{% endif %}");
        var raisingSession = ChatSession.ForModel(model, context, raising);
        var raised = Assert.Throws<ChatFormatException>(() => raisingSession.Complete([ChatTurn.User("x")], greedy, Greedy12, cancellation: TestContext.Current.CancellationToken));
        Assert.Contains($"chat template file {raising} refused the conversation: a system message must come first", raised.Message);

        var unknown = Assert.Throws<ChatFormatException>(() => ChatSession.ForModel(model, context, "vicuna-17"));
        Assert.Contains("--chat-template vicuna-17: neither a built-in template (llama3, chatml, mistral, llama2, zephyr, tinyllama, gemma, phi3) nor an existing file", unknown.Message);

        string broken = Path.Combine(_dir, "broken.jinja");
        File.WriteAllText(broken, "{% for m in messages %}{{ m.content }}");
        var syntax = Assert.Throws<ChatFormatException>(() => ChatSession.ForModel(model, context, broken));
        Assert.Contains("line 1, column 4", syntax.Message);
        Assert.Contains("never closed", syntax.Message);
        Assert.Contains("--chat-template NAME|FILE", syntax.Message);
    }

    [Fact]
    public void A_model_without_a_template_needs_an_override()
    {
        string path = Write("plain.gguf", ChatTestModels.Spec(template: null));
        using var model = CpuTestBackend.LoadModel(path);
        using var context = model.CreateContext(new ContextOptions(128));
        var e = Assert.Throws<ChatFormatException>(() => ChatSession.ForModel(model, context));
        Assert.Contains("has no chat template (tokenizer.chat_template)", e.Message);
        Assert.Contains("--chat-template NAME|FILE (NAME: llama3, chatml", e.Message);
        Assert.Equal("built-in chatml", ChatSession.ForModel(model, context, "ChatML").Template.Name);
    }

    [Fact]
    public void Stop_sequences_cut_the_answer_and_are_never_streamed()
    {
        string path = Write("m.gguf", ChatTestModels.Spec());
        using var model = CpuTestBackend.LoadModel(path);
        using var context = model.CreateContext(new ContextOptions(256));
        var session = ChatSession.ForModel(model, context);
        var free = session.Complete([ChatTurn.User("hi")], new Sampler(SamplerSettings.Greedy), new ChatGenerationOptions { MaxTokens = 16 }, cancellation: TestContext.Current.CancellationToken);
        Assert.True(free.Text.Length > 6, free.Text);
        string stop = free.Text.Substring(free.Text.Length / 2, 3);
        var streamed = new System.Text.StringBuilder();
        var cut = session.Complete([ChatTurn.User("hi")], new Sampler(SamplerSettings.Greedy),
            new ChatGenerationOptions { MaxTokens = 16, StopSequences = ["never appears", stop] }, t => streamed.Append(t), TestContext.Current.CancellationToken);
        Assert.Equal(ChatStopReason.StopSequence, cut.StopReason);
        Assert.Equal(free.Text[..free.Text.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
        Assert.Equal(cut.Text, streamed.ToString());
    }
}

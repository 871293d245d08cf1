using System.Text.RegularExpressions;
using PluginEngine.Tests.Plugins;
using Xunit;

namespace PluginEngine.Tests.Chat;

/// <summary><c>pluginengine chat -p …</c> end to end through the real CLI and CPU plugin, on a generated chat model.</summary>
public sealed partial class ChatCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pe-chatcli-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = PluginEngine.Host.Cli.Run(["--plugins", Path.Combine(PluginTestFiles.RepoRoot, "plugins.json"), .. args], output, error);
        return (code, output.ToString(), error.ToString());
    }

    [GeneratedRegex(@"\[prompt (\d+) tokens, (\d+) evaluated, [\d.]+ t/s \| answer (\d+) tokens, [\d.]+ t/s \| ([^|]+) \| context (\d+)\]")]
    private static partial Regex SpeedLine();

    [Fact]
    public void Chat_p_answers_each_turn_reuses_the_history_and_reset_starts_over()
    {
        var (model, eot, _) = ChatSessionTests.ModelEndingAfterThreeTokens(_dir);
        var r = Run("chat", "-m", model, "--temp", "0", "-n", "12", "-t", "1",
            "-p", "hello there", "-p", "tell me more", "-p", "/reset", "-p", "hello there");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains("chat template: the model's tokenizer.chat_template", r.Err);
        Assert.Contains($"({eot})", r.Err); // listed among the end-of-turn tokens
        Assert.Contains("[conversation reset]", r.Err);

        var lines = SpeedLine().Matches(r.Err).Select(m => (Prompt: int.Parse(m.Groups[1].Value), Evaluated: int.Parse(m.Groups[2].Value),
            Answer: int.Parse(m.Groups[3].Value), Why: m.Groups[4].Value.Trim(), Context: int.Parse(m.Groups[5].Value))).ToList();
        Assert.Equal(3, lines.Count);
        var (first, second, afterReset) = (lines[0], lines[1], lines[2]);
        Assert.Equal("end of turn", first.Why);                       // stopped on the model's end-of-turn token
        Assert.Equal(4, first.Answer);                                // three text tokens and the end token
        Assert.Equal(first.Prompt, first.Evaluated);                  // a fresh conversation evaluates everything
        Assert.Equal(first.Prompt + 3, second.Prompt - second.Evaluated); // turn 2: the history (prompt 1 + answer) came from the cache
        Assert.True(second.Evaluated < second.Prompt / 2);
        Assert.Equal(first.Prompt, afterReset.Evaluated);             // after /reset everything is evaluated again
        Assert.Equal(first.Prompt, afterReset.Prompt);

        var answers = r.Out.Split('\n');
        Assert.True(answers.Length >= 3, r.Out);
        Assert.Equal(answers[0], answers[2]);                         // greedy: the same first answer after the reset
    }

    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    public void Chat_keeps_its_history_in_a_quantized_cache(string kv)
    {
        // The second turn rewinds to the shared history and evaluates only the rest (the rows kept are whole blocks); a reset
        // gives the same greedy answer again.
        var (model, _, _) = ChatSessionTests.ModelEndingAfterThreeTokens(_dir);
        var r = Run("chat", "-m", model, "--temp", "0", "-n", "12", "-t", "1", "--kv-type", kv,
            "-p", "hello there", "-p", "tell me more", "-p", "/reset", "-p", "hello there");
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains($"KV cache: {kv}, ", r.Err);
        var lines = SpeedLine().Matches(r.Err).Select(m => (Prompt: int.Parse(m.Groups[1].Value), Evaluated: int.Parse(m.Groups[2].Value))).ToList();
        Assert.Equal(3, lines.Count);
        Assert.True(lines[1].Evaluated < lines[1].Prompt / 2, $"turn 2 evaluated {lines[1].Evaluated} of {lines[1].Prompt} tokens");
        var answers = r.Out.Split('\n');
        Assert.Equal(answers[0], answers[2]);
    }

    [Fact]
    public void Chat_without_a_template_is_a_clear_error_and_an_override_works()
    {
        string plain = Path.Combine(_dir, "plain.gguf");
        Core.Models.SyntheticModel.Write(ChatTestModels.Spec(template: null), plain);
        var r = Run("chat", "-m", plain, "-p", "hi", "-n", "2", "-t", "1");
        Assert.Equal(2, r.Code);
        Assert.Contains("error: ", r.Err);
        Assert.Contains("has no chat template (tokenizer.chat_template); pass --chat-template NAME|FILE", r.Err);

        var ok = Run("chat", "-m", plain, "--chat-template", "chatml", "-p", "hi", "-n", "3", "--seed", "1", "-t", "1");
        Assert.True(ok.Code == 0, ok.Err);
        Assert.Contains("chat template: built-in chatml", ok.Err);
        Assert.Matches(SpeedLine(), ok.Err);
        Assert.Contains("token limit (-n)", ok.Err);
    }
}

using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using PluginEngine.Core.Inference;

namespace PluginEngine.Host.Commands;

/// <summary>
/// <c>pluginengine logits [-m MODEL] (--tokens 1,450,… | -p TEXT) [-o FILE] [--top N] [--all-positions]</c>: evaluates the
/// sequence in one batch, writes the logits as little-endian float32 (last position, or [tokens, vocab] with
/// <c>--all-positions</c>) and prints the top N tokens with their pieces — for comparing backends, quantizations or engines.
/// </summary>
public static class LogitsCommand
{
    public static Command Create(CliContext context)
    {
        var model = new ModelOptions();
        var tokens = new Option<string?>("--tokens") { Description = "Comma-separated token ids (used as given: add BOS yourself)", HelpName = "IDS" };
        var prompt = new Option<string?>("--prompt", "-p") { Description = "Text to tokenize (BOS added as the model asks)" };
        var output = new Option<string?>("--output", "-o") { Description = "Write the logits here as little-endian float32", HelpName = "FILE" };
        var top = new Option<int>("--top") { Description = "Print the N most likely next tokens", DefaultValueFactory = _ => 10 };
        var all = new Option<bool>("--all-positions") { Description = "Logits of every position ([tokens, vocab]) instead of the last one" };
        var kv = new KvCacheOptions();
        var command = new Command("logits", "Evaluate a token sequence in one batch and output its logits");
        model.AddTo(command);
        foreach (var o in new Option[] { tokens, prompt, output, top, all }) command.Options.Add(o);
        kv.AddTo(command);
        command.SetAction(parse =>
        {
            string? ids = parse.GetValue(tokens), text = parse.GetValue(prompt);
            if ((ids is null) == (text is null)) throw new UserErrorException("give exactly one of --tokens and --prompt", isUsage: true);
            if (parse.GetValue(top) < 0) throw new UserErrorException($"--top {parse.GetValue(top)}: must be 0 or more", isUsage: true);
            var kvType = kv.Resolve(parse);
            using var loaded = model.LoadModel(parse, context, out _, model.ResolveSplit(parse, kvCacheType: kvType));
            int vocab = loaded.HyperParameters.VocabularySize;
            int[] sequence = ids is not null ? ParseIds(ids, vocab) : loaded.Tokenizer.Encode(text!, addBos: true, parseSpecial: true);
            if (sequence.Length == 0) throw new UserErrorException("the sequence is empty");
            if (sequence.Length > loaded.HyperParameters.ContextLength)
                throw new UserErrorException($"{sequence.Length} tokens exceed the model's context length {loaded.HyperParameters.ContextLength}");
            bool allPositions = parse.GetValue(all);
            using var llama = loaded.CreateContext(new ContextOptions(Math.Min(loaded.HyperParameters.ContextLength, Math.Max(sequence.Length, 16)),
                BatchSize: sequence.Length, KvCacheType: kvType));
            var logits = new float[(allPositions ? sequence.Length : 1) * (long)vocab];
            llama.Evaluate(sequence, logits, allPositions);

            if (loaded.HasRandomWeights) context.Error.WriteLine("note: RANDOM weights (demo model)");
            context.Error.WriteLine($"evaluated {sequence.Length} tokens: {string.Join(",", sequence)}");
            if (llama.Transfers.Copies > 0) context.Error.WriteLine($"device transfers = {llama.Transfers} ({llama.Transfers.DescribePairs()})");
            if (parse.GetValue(output) is { } file)
            {
                if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("big-endian hosts are not supported");
                try
                {
                    using var stream = File.Create(file);
                    stream.Write(MemoryMarshal.AsBytes(logits.AsSpan()));
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new UserErrorException($"-o {file}: cannot write the logits ({e.Message})");
                }
                context.Error.WriteLine($"wrote {logits.Length} float32 ({(allPositions ? $"{sequence.Length} × {vocab}" : $"{vocab}")}) to {file}");
            }
            var last = new ArraySegment<float>(logits, logits.Length - vocab, vocab);
            int n = Math.Clamp(parse.GetValue(top), 0, vocab);
            var order = Enumerable.Range(0, vocab).OrderByDescending(i => last[i]).Take(n);
            foreach (int id in order)
                context.Output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{id,8} {last[id],12:F6}  {ReadablePiece(loaded.Tokenizer.TokenPiece(id, renderSpecial: true))}"));
            return ExitCodes.Success;
        });
        return command;
    }

    private static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// A token's text as a reader wants it: in quotes (so spaces show), letters of every script as themselves, control
    /// characters and quotes escaped (\n, \t, \", \u0001), and a piece that is not whole UTF-8 (one byte of a multi-byte
    /// character) as its bytes, &lt;0xE2&gt;.
    /// </summary>
    internal static string ReadablePiece(ReadOnlySpan<byte> piece)
    {
        string text;
        try
        {
            text = StrictUtf8.GetString(piece);
        }
        catch (System.Text.DecoderFallbackException)
        {
            var bytes = new System.Text.StringBuilder();
            foreach (byte b in piece) bytes.Append(CultureInfo.InvariantCulture, $"<0x{b:X2}>");
            return bytes.ToString();
        }
        var sb = new System.Text.StringBuilder(text.Length + 2).Append('"');
        foreach (char c in text)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (char.IsControl(c)) sb.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:X4}");
                    else sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    private static int[] ParseIds(string text, int vocab)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out ids[i]))
                throw new UserErrorException($"--tokens item {i + 1} '{parts[i]}' is not an integer");
            if (ids[i] < 0 || ids[i] >= vocab) throw new UserErrorException($"--tokens item {i + 1}: id {ids[i]} is outside the vocabulary (0..{vocab - 1})");
        }
        return ids;
    }
}

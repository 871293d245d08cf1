using System.CommandLine;
using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;
using PluginEngine.Host.Commands;

namespace PluginEngine.Host;

/// <summary>
/// The <c>pluginengine</c> command line. <see cref="Run"/> is the whole program with its writers passed in, so
/// tests run commands in-process. To add a command: one file under Commands/ with a <c>Create(CliContext)</c>
/// factory, registered in <see cref="BuildRoot"/>; it reads global options through <see cref="CliContext"/>.
/// </summary>
public static class Cli
{
    /// <summary>Parses <paramref name="args"/>, runs the command and returns the exit code (<see cref="ExitCodes"/>).</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        ArgumentNullException.ThrowIfNull(args);
        var context = new CliContext(output, error);
        var root = BuildRoot(context);
        var parseResult = root.Parse(args);
        context.ParseResult = parseResult;

        if (parseResult.Errors.Count > 0)
        {
            foreach (var parseError in parseResult.Errors) error.WriteLine($"error: {UserWords(parseError.Message)}");
            error.WriteLine(HelpHint(parseResult));
            return ExitCodes.UserError;
        }

        try
        {
            return parseResult.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (IsUserError(e))
        {
            // One clear line; the message already names the file, JSON path or backend.
            error.WriteLine($"error: {e.Message}");
            // A flag's value was wrong: point at the flags of the command that was run.
            if (e is UserErrorException { IsUsage: true }) error.WriteLine(HelpHint(parseResult));
            if (context.Verbose) error.WriteLine(e);
            return ExitCodes.UserError;
        }
        catch (Exception e)
        {
            error.WriteLine($"internal error: {e.GetType().Name}: {e.Message}");
            if (context.Verbose) error.WriteLine(e);
            else error.WriteLine("(run with -v for the stack trace)");
            return ExitCodes.InternalError;
        }
    }

    /// <summary>The root command with the global options and every command.</summary>
    public static RootCommand BuildRoot(CliContext context)
    {
        var root = new RootCommand("PluginEngine: GGUF inference with run-time loaded compute backends");
        root.Options.Add(context.PluginsOption);
        root.Options.Add(context.VerboseOption);
        root.Subcommands.Add(BackendsCommand.Create(context));
        root.Subcommands.Add(RunCommand.Create(context));
        root.Subcommands.Add(ChatCommand.Create(context));
        root.Subcommands.Add(ServeCommand.Create(context));
        root.Subcommands.Add(InspectCommand.Create(context));
        root.Subcommands.Add(LogitsCommand.Create(context));
        root.Subcommands.Add(BenchCommand.Create(context));
        root.Subcommands.Add(ConformanceCommand.Create(context));
        return root;
    }

    /// <summary>
    /// Bad input — the command line, plugins.json, a plugin option, a model file that is not a usable model (its GGUF
    /// structure, metadata types and ranges, tokenizer keys, tensor shapes, non-finite weights or logits) — as opposed
    /// to a bug. Every one of these messages names what is wrong (flag, JSON path, file and key or tensor).
    /// </summary>
    internal static bool IsUserError(Exception e)
        => e is PluginConfigException or BackendNotAvailableException or PluginOptionException or UserErrorException
            or Core.Gguf.GgufFormatException or Core.Gguf.GgufMetadataTypeException or Core.Gguf.GgufMetadataRangeException
            or Core.Models.ModelFormatException or Core.Tokenizer.TokenizerDataException or Core.Inference.NonFiniteLogitsException
            or Core.Loading.LoadOptionsException or Core.Inference.ContextOverflowException or Core.Inference.MissingOpsException or Core.Memory.HugePagesUnavailableException
            or FileNotFoundException;

    /// <summary>"Run 'pluginengine run --help' for usage." naming the (sub)command that was parsed.</summary>
    internal static string HelpHint(ParseResult parse)
    {
        var names = new List<string>();
        for (var r = parse.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
            if (r.Command is not RootCommand) names.Insert(0, r.Command.Name);
        return $"Run '{string.Join(' ', ["pluginengine", .. names])} --help' for usage.";
    }

    /// <summary>System.CommandLine's parse errors in a user's words: "a number" instead of 'System.Single'.</summary>
    private static string UserWords(string message) => message
        .Replace("'System.Single'", "a number").Replace("'System.Double'", "a number")
        .Replace("'System.Int32'", "a whole number").Replace("'System.Int64'", "a whole number")
        .Replace("'System.Boolean'", "true or false").Replace("as expected type a", "as a");
}

using System.CommandLine;
using Microsoft.Extensions.Logging;
using PluginEngine.Core.Plugins;
using PluginEngine.Host.Logging;
using Spectre.Console;

namespace PluginEngine.Host;

/// <summary>
/// What a command needs from its surroundings: the output and error writers (the process console, or
/// string writers in tests), the global options, and lazily created services (logging, the plugin host).
/// One instance per <see cref="Cli.Run"/> call.
/// </summary>
public sealed class CliContext
{
    private ParseResult? _parseResult;
    private ILoggerFactory? _loggers;

    /// <summary>Creates a context writing to <paramref name="output"/> and <paramref name="error"/>.</summary>
    public CliContext(TextWriter output, TextWriter error)
    {
        Output = output;
        Error = error;
        PluginsOption = GlobalOptions.CreatePlugins();
        VerboseOption = GlobalOptions.CreateVerbose();
    }

    /// <summary>Where results go (stdout).</summary>
    public TextWriter Output { get; }

    /// <summary>Where logs and errors go (stderr).</summary>
    public TextWriter Error { get; }

    /// <summary>The <c>--plugins</c> option instance registered on the root command.</summary>
    public Option<string?> PluginsOption { get; }

    /// <summary>The <c>-v</c> option instance registered on the root command.</summary>
    public Option<bool> VerboseOption { get; }

    /// <summary>The parse result of this invocation (set by <see cref="Cli"/> before any action runs).</summary>
    public ParseResult ParseResult
    {
        get => _parseResult ?? throw new InvalidOperationException("the command line has not been parsed yet");
        internal set => _parseResult = value;
    }

    /// <summary>True with <c>-v</c>.</summary>
    public bool Verbose => _parseResult?.GetValue(VerboseOption) ?? false;

    /// <summary>Logging to <see cref="Error"/>: debug with <c>-v</c>, warnings and errors otherwise.</summary>
    public ILoggerFactory Loggers => _loggers ??= LoggerFactory.Create(b => b
        .SetMinimumLevel(Verbose ? LogLevel.Debug : LogLevel.Warning)
        .AddProvider(new TextWriterLoggerProvider(Error)));

    /// <summary>Finds plugins.json (see <see cref="PluginConfigLocator"/>) and loads every enabled plugin.</summary>
    /// <exception cref="PluginConfigException">plugins.json is missing (when named) or invalid.</exception>
    public PluginHost LoadPlugins() => PluginHost.Load(LocatePluginConfiguration(), Loggers);

    /// <summary>The plugins.json this invocation uses (<c>--plugins</c>, then the search order of <see cref="PluginConfigLocator"/>).</summary>
    public PluginConfiguration LocatePluginConfiguration() => PluginConfigLocator.Locate(ParseResult.GetValue(PluginsOption));

    /// <summary>
    /// A Spectre console over <see cref="Output"/>. Colours and the terminal width only when writing to a real
    /// terminal; redirected output and test writers get plain text and a wide fixed width, so long reasons stay on one line.
    /// </summary>
    public IAnsiConsole CreateConsole()
    {
        bool terminal = ReferenceEquals(Output, Console.Out) && !Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(Output),
        });
        if (!terminal) console.Profile.Width = 240;
        return console;
    }
}

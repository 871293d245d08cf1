using System.CommandLine;

namespace PluginEngine.Host;

/// <summary>
/// Options every command accepts (declared once on the root command as recursive options). Commands read them
/// through <see cref="CliContext"/> rather than declaring their own copies.
/// </summary>
public static class GlobalOptions
{
    /// <summary><c>--plugins FILE</c>: the plugins.json to use (overrides <c>PLUGINENGINE_PLUGINS</c> and the search).</summary>
    public static Option<string?> CreatePlugins() => new("--plugins")
    {
        Description = "plugins.json to load backends from (default: PLUGINENGINE_PLUGINS, ./plugins.json, the repository's plugins.json, built-in CPU)",
        HelpName = "FILE",
        Recursive = true,
    };

    /// <summary><c>-v</c>/<c>--verbose</c>: debug logging to stderr and stack traces on errors.</summary>
    public static Option<bool> CreateVerbose() => new("--verbose", "-v")
    {
        Description = "Log every decision to stderr (plugin candidates, probes) and show stack traces on errors",
        Recursive = true,
    };
}

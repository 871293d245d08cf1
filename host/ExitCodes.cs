namespace PluginEngine.Host;

/// <summary>Process exit codes of <c>pluginengine</c>.</summary>
public static class ExitCodes
{
    /// <summary>The command did what was asked (for <c>backends</c>: even when some plugins were rejected; they are listed).</summary>
    public const int Success = 0;

    /// <summary>An unexpected internal error (a bug): the message, and the stack trace with <c>-v</c>.</summary>
    public const int InternalError = 1;

    /// <summary>Bad input: command-line usage, plugins.json, an unknown backend, a plugin option of the wrong type.</summary>
    public const int UserError = 2;

    /// <summary>Checks ran and at least one failed (<c>conformance</c>).</summary>
    public const int ChecksFailed = 3;
}

namespace PluginEngine.Core.Plugins;

/// <summary>One problem found in a plugins.json file.</summary>
/// <param name="FilePath">The file (or "&lt;built-in default&gt;").</param>
/// <param name="JsonPath">Where in the document, e.g. <c>$.plugins[1].enabled</c>.</param>
/// <param name="Message">What was expected and what was found.</param>
public sealed record PluginConfigError(string FilePath, string JsonPath, string Message)
{
    /// <inheritdoc />
    public override string ToString() => $"{FilePath}: {JsonPath}: {Message}";
}

/// <summary>
/// plugins.json is missing, unreadable, malformed or invalid. <see cref="Errors"/> holds every problem found
/// (validation does not stop at the first one, so a user fixes the file in one pass); the message is one line.
/// </summary>
public sealed class PluginConfigException : Exception
{
    /// <summary>Creates the exception from at least one error.</summary>
    public PluginConfigException(IReadOnlyList<PluginConfigError> errors, Exception? inner = null)
        : base(FormatMessage(errors), inner)
    {
        Errors = errors;
    }

    /// <summary>Creates the exception for a single error.</summary>
    public PluginConfigException(string filePath, string jsonPath, string message, Exception? inner = null)
        : this([new PluginConfigError(filePath, jsonPath, message)], inner)
    {
    }

    /// <summary>Every problem found, in document order.</summary>
    public IReadOnlyList<PluginConfigError> Errors { get; }

    /// <summary>The file the errors are in.</summary>
    public string FilePath => Errors[0].FilePath;

    /// <summary>JSON path of the first error.</summary>
    public string JsonPath => Errors[0].JsonPath;

    private static string FormatMessage(IReadOnlyList<PluginConfigError> errors)
    {
        if (errors is null || errors.Count == 0) throw new ArgumentException("at least one error is required", nameof(errors));
        if (errors.Count == 1) return errors[0].ToString();
        // One line even with several errors: the CLI prints exactly one line per failure.
        return $"{errors[0].FilePath}: {errors.Count} errors: " + string.Join("; ", errors.Select(e => $"{e.JsonPath}: {e.Message}"));
    }
}

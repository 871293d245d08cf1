namespace PluginEngine.Core.Loading;

/// <summary>
/// The host-import switch together with where its value came from, for the log. The one parser of the setting: the
/// command-line flag (<c>--host-import</c>, alias <c>--gpu-host-import</c>) and the environment variable accept the same
/// values (<see cref="Parse"/>).
/// </summary>
/// <param name="Mode">Effective mode.</param>
/// <param name="Source">"default", "flag", or "environment PLUGINENGINE_HOST_IMPORT".</param>
/// <param name="Note">A conflict between flag and environment, when there was one.</param>
public sealed record HostImportSetting(HostImportMode Mode, string Source, string? Note = null)
{
    /// <summary>Name of the environment variable that sets the mode.</summary>
    public const string EnvironmentVariable = "PLUGINENGINE_HOST_IMPORT";

    /// <summary>The variable's earlier name, still read when <see cref="EnvironmentVariable"/> is unset.</summary>
    public const string LegacyEnvironmentVariable = "PLUGINENGINE_GPU_HOST_IMPORT";

    /// <summary>The values <see cref="Parse"/> accepts, as error messages list them.</summary>
    public const string ExpectedValues = "auto, on or off";

    /// <summary>The default: auto.</summary>
    public static HostImportSetting Default { get; } = new(HostImportMode.Auto, "default");

    /// <summary>
    /// Parses one value (case-insensitive): <c>auto</c>; <c>on</c>, <c>1</c>, <c>true</c>; <c>off</c>, <c>0</c>, <c>false</c>.
    /// Anything else throws <see cref="ArgumentException"/> whose message names <paramref name="source"/> (the flag or the variable).
    /// </summary>
    public static HostImportMode Parse(string value, string source) => value.Trim().ToLowerInvariant() switch
    {
        "auto" => HostImportMode.Auto,
        "on" or "1" or "true" => HostImportMode.On,
        "off" or "0" or "false" => HostImportMode.Off,
        _ => throw new ArgumentException($"{source}: unknown value '{value}' (expected {ExpectedValues})"),
    };

    /// <summary>The environment's value and the variable it came from: <see cref="EnvironmentVariable"/>, else the legacy name.</summary>
    public static (string Variable, string? Value) ReadEnvironment()
    {
        string? value = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(value)) return (EnvironmentVariable, value);
        string? legacy = Environment.GetEnvironmentVariable(LegacyEnvironmentVariable);
        return string.IsNullOrWhiteSpace(legacy) ? (EnvironmentVariable, null) : (LegacyEnvironmentVariable, legacy);
    }

    /// <summary>Resolves the mode from a command-line flag (null when not given) and this process's environment.</summary>
    public static HostImportSetting Resolve(HostImportMode? flag)
    {
        var (variable, value) = ReadEnvironment();
        return Resolve(flag, value, variable);
    }

    /// <summary>
    /// Resolves the mode from a command-line flag (null when not given) and the environment value (null when unset) of
    /// <paramref name="variable"/>. The flag wins; a disagreement is reported in <see cref="Note"/>. A bad environment
    /// value is an error naming the variable.
    /// </summary>
    public static HostImportSetting Resolve(HostImportMode? flag, string? environmentValue, string variable = EnvironmentVariable)
    {
        HostImportMode? env = string.IsNullOrWhiteSpace(environmentValue) ? null : Parse(environmentValue, variable);
        if (flag is { } f)
        {
            string? note = env is { } e && e != f ? $"command-line flag ({f}) overrides {variable}={environmentValue}" : null;
            return new HostImportSetting(f, "flag", note);
        }
        return env is { } v ? new HostImportSetting(v, $"environment {variable}") : Default;
    }
}

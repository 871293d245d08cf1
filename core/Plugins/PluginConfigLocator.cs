namespace PluginEngine.Core.Plugins;

/// <summary>
/// Finds the plugins.json to use. Order: <c>--plugins FILE</c> &gt; <c>PLUGINENGINE_PLUGINS</c> &gt; plugins.json in
/// the current directory &gt; the first plugins.json found walking up from the host executable's folder (in a
/// checkout that is the repository root, above <c>host/bin/...</c>) &gt; the built-in default (CPU plugin only).
/// A file named explicitly (option or environment variable) must exist: a typo there is an error, not a fallback.
/// </summary>
public static class PluginConfigLocator
{
    /// <summary>Locates and loads the configuration for this process.</summary>
    /// <param name="commandLinePath">The <c>--plugins</c> value, or null.</param>
    /// <exception cref="PluginConfigException">A named file is missing or any file found is invalid.</exception>
    public static PluginConfiguration Locate(string? commandLinePath)
        => Locate(commandLinePath, Environment.GetEnvironmentVariable(PluginConfiguration.EnvironmentVariable),
                  Directory.GetCurrentDirectory(), AppContext.BaseDirectory);

    /// <summary>Locates and loads the configuration from explicit inputs (testable without touching the process environment).</summary>
    /// <param name="commandLinePath">The <c>--plugins</c> value, or null.</param>
    /// <param name="environmentValue">The value of <c>PLUGINENGINE_PLUGINS</c>, or null.</param>
    /// <param name="currentDirectory">The working directory.</param>
    /// <param name="hostDirectory">The host executable's folder (<see cref="AppContext.BaseDirectory"/>).</param>
    public static PluginConfiguration Locate(string? commandLinePath, string? environmentValue, string currentDirectory, string hostDirectory)
    {
        if (!string.IsNullOrWhiteSpace(commandLinePath))
            return PluginConfiguration.Load(Path.GetFullPath(commandLinePath, currentDirectory), PluginConfigSource.CommandLine);

        if (!string.IsNullOrWhiteSpace(environmentValue))
        {
            string path = Path.GetFullPath(environmentValue, currentDirectory);
            if (!File.Exists(path) && !Directory.Exists(path)) // a directory gets Load's "is a directory" message
                throw new PluginConfigException(path, "$", $"file not found (named by the {PluginConfiguration.EnvironmentVariable} environment variable)");
            return PluginConfiguration.Load(path, PluginConfigSource.EnvironmentVariable);
        }

        string inCurrent = Path.Combine(currentDirectory, PluginConfiguration.FileName);
        if (File.Exists(inCurrent)) return PluginConfiguration.Load(inCurrent, PluginConfigSource.CurrentDirectory);

        if (FindUpwards(hostDirectory, PluginConfiguration.FileName) is { } found)
            return PluginConfiguration.Load(found, PluginConfigSource.HostDirectory);

        return PluginConfiguration.CreateDefault(FindDefaultBase(hostDirectory, currentDirectory));
    }

    /// <summary>The first <paramref name="fileName"/> in <paramref name="startDirectory"/> or any folder above it.</summary>
    public static string? FindUpwards(string startDirectory, string fileName)
    {
        for (var dir = new DirectoryInfo(Path.GetFullPath(startDirectory)); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, fileName);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>
    /// Base folder for the built-in default: the nearest folder above the host that holds the default CPU plugin
    /// (a checkout without plugins.json, or an install that ships plugins/ beside the executable), else the current directory.
    /// </summary>
    private static string FindDefaultBase(string hostDirectory, string currentDirectory)
    {
        string? found = FindUpwards(hostDirectory, PluginConfiguration.DefaultCpuAssembly);
        if (found is null) return currentDirectory;
        // found = <base>/plugins/cpu/PluginEngine.Backends.Cpu.dll
        return Path.GetDirectoryName(Path.GetDirectoryName(Path.GetDirectoryName(found)!)!)!;
    }
}

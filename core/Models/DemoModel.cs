namespace PluginEngine.Core.Models;

/// <summary>
/// The deterministic demo model every command uses when no model is given: generated on first use (random weights,
/// labelled as such in its metadata and in every command's output) and cached.
/// </summary>
public static class DemoModel
{
    /// <summary>Bump when <see cref="SyntheticModelSpec.Demo"/> or the generator changes, so stale caches are not reused.</summary>
    public const int Version = 2;

    /// <summary>Cache folder: PLUGINENGINE_CACHE, else $XDG_CACHE_HOME/pluginengine, else ~/.cache/pluginengine.</summary>
    public static string CacheDirectory
    {
        get
        {
            if (Environment.GetEnvironmentVariable("PLUGINENGINE_CACHE") is { Length: > 0 } dir) return dir;
            string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            string root = string.IsNullOrEmpty(xdg) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache") : xdg;
            return Path.Combine(root, "pluginengine");
        }
    }

    /// <summary>Path of the demo model, generating it first when it is not cached. <paramref name="log"/> hears about generation.</summary>
    public static string EnsureExists(Action<string>? log = null) => EnsureExists(SyntheticModelSpec.Demo, $"demo-v{Version}.gguf", log);

    /// <summary>Path of a generated model in the cache, generating it when missing.</summary>
    public static string EnsureExists(SyntheticModelSpec spec, string fileName, Action<string>? log = null)
    {
        string path = Path.Combine(CacheDirectory, fileName);
        if (File.Exists(path)) return path;
        log?.Invoke($"generating {spec.Name} → {path} (first use; random weights)");
        // A progress line at most every 2 s (and the last one), so a long generation is never silent and a short one quiet.
        var last = System.Diagnostics.Stopwatch.StartNew();
        SyntheticModel.Write(spec, path, p =>
        {
            bool finished = p.TensorsDone == p.Tensors;
            if (log is null || (!finished && last.Elapsed < TimeSpan.FromSeconds(2))) return;
            last.Restart();
            log(finished ? $"generated {spec.Name}: {p.Tensors} tensors, {p.Bytes:N0} B in {p.Elapsed.TotalSeconds:F1} s; writing the file" : $"generating {spec.Name}: {p}");
        });
        return path;
    }
}

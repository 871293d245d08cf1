using System.Runtime.InteropServices;

namespace PluginEngine.Backends.Gpu.Native;

/// <summary>Finds an optional native library (NVRTC, cuBLAS): each name on the loader's default path first, then in each extra folder.</summary>
internal static class NativeLibraryLoader
{
    /// <summary>The first of <paramref name="names"/> that loads, and where it was found; (0, "") when none does.</summary>
    public static (nint Handle, string Loaded) TryLoadFirst(IReadOnlyList<string> names, IEnumerable<string> extraFolders)
    {
        foreach (string name in names)
            if (NativeLibrary.TryLoad(name, out nint handle)) return (handle, name);
        foreach (string folder in extraFolders)
            foreach (string name in names)
            {
                string path = Path.Combine(folder, name);
                if (NativeLibrary.TryLoad(path, out nint handle)) return (handle, path);
            }
        return (0, "");
    }
}

/// <summary>
/// Resolves the entry points of a loaded native library: <see cref="Required"/> records each symbol it cannot find, so
/// that a binder can bind everything first and then report every missing name at once (a probe reason).
/// </summary>
internal sealed class NativeSymbols(nint handle)
{
    private readonly List<string> _missing = [];

    /// <summary>The symbol's address, or 0 (and the name recorded as missing).</summary>
    public nint Required(string symbol)
    {
        if (NativeLibrary.TryGetExport(handle, symbol, out nint p)) return p;
        _missing.Add(symbol);
        return 0;
    }

    /// <summary>The symbol's address, or 0 when the library lacks it (not recorded: the caller checks).</summary>
    public nint Optional(string symbol) => NativeLibrary.TryGetExport(handle, symbol, out nint p) ? p : 0;

    /// <summary>"lacks a, b" for the missing required symbols, or null when every one resolved.</summary>
    public string? Missing => _missing.Count == 0 ? null : $"lacks {string.Join(", ", _missing)}";
}


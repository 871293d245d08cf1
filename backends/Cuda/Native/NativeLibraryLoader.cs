using System.Runtime.InteropServices;

namespace PluginEngine.Backends.Cuda.Native;

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

using PluginEngine.Host.Commands;

namespace PluginEngine.Host;

/// <summary>Checks a model path before it is opened, so a directory or a missing file gets a message in a user's words.</summary>
public static class ModelFileCheck
{
    /// <summary>Throws <see cref="UserErrorException"/> unless <paramref name="path"/> is an existing file.</summary>
    public static void RequireFile(string path)
    {
        if (Directory.Exists(path))
            throw new UserErrorException($"{path} is a directory, not a model file; give the .gguf file inside it");
        if (!File.Exists(path)) throw new UserErrorException($"model file not found: {path}");
    }
}

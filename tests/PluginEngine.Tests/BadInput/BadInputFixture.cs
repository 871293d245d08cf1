using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Models;
using PluginEngine.Tests.Plugins;

namespace PluginEngine.Tests.BadInput;

/// <summary>
/// A small valid model, a CPU-only plugins.json, and a way to write variants of the model with edited metadata or
/// tensors; runs the real CLI in-process (<see cref="PluginEngine.Host.Cli.Run"/>) on them.
/// </summary>
public sealed class BadInputFixture : IDisposable
{
    public BadInputFixture()
    {
        Directory = System.IO.Directory.CreateTempSubdirectory("pe-badinput-").FullName;
        Model = Path.Combine(Directory, "good.gguf");
        SyntheticModel.Write(new SyntheticModelSpec
        {
            VocabularySize = 384, EmbeddingLength = 64, BlockCount = 2, HeadCount = 4, KvHeadCount = 2, FeedForwardLength = 128, ContextLength = 64,
        }, Model);
        CpuOnlyPlugins = Path.Combine(Directory, "plugins.json");
        File.WriteAllText(CpuOnlyPlugins, $$"""
            { "preference": ["cpu"], "plugins": [ { "name": "cpu", "assembly": "{{PluginTestFiles.CpuPlugin.Replace("\\", "/")}}", "options": { "threads": 1 } } ] }
            """);
    }

    public string Directory { get; }
    public string Model { get; }
    public string CpuOnlyPlugins { get; }

    public void Dispose() => System.IO.Directory.Delete(Directory, true);

    /// <summary>Runs the CLI with the CPU-only plugins.json (unless the arguments name another).</summary>
    public static (int Code, string Out, string Err) Run(string plugins, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = PluginEngine.Host.Cli.Run(["--plugins", plugins, .. args], output, error);
        return (code, output.ToString(), error.ToString());
    }

    public (int Code, string Out, string Err) Run(params string[] args) => Run(CpuOnlyPlugins, args);

    /// <summary>
    /// Writes a copy of the good model named <paramref name="name"/> with its metadata edited by <paramref name="editMetadata"/>
    /// (add, replace or remove keys) and each tensor passed through <paramref name="editTensor"/> (return null to drop it).
    /// </summary>
    public string Variant(string name, Action<Dictionary<string, GgufValue>>? editMetadata = null,
        Func<TensorInfo, byte[], (TensorInfo Info, byte[] Data)?>? editTensor = null)
    {
        var source = GgufReader.Read(Model);
        var metadata = source.Metadata.ToDictionary(kv => kv.Key, kv => kv.Value);
        editMetadata?.Invoke(metadata);
        var writer = new GgufWriter(new GgufWriterOptions { Alignment = source.Alignment });
        foreach (var (key, value) in metadata)
            if (key != "general.alignment") writer.AddMetadata(key, value);
        using var stream = File.OpenRead(Model);
        foreach (var tensor in source.Tensors)
        {
            var data = new byte[tensor.ByteSize];
            stream.Position = tensor.FileOffset;
            stream.ReadExactly(data);
            var edited = editTensor is null ? (tensor.Info, data) : editTensor(tensor.Info, data);
            if (edited is { } e) writer.AddTensor(e.Info, e.Data);
        }
        string path = Path.Combine(Directory, name + ".gguf");
        writer.WriteTo(path);
        return path;
    }
}

namespace PluginEngine.Core.Loading;

/// <summary>
/// Where the model file's bytes are held in host memory while (and after) loading. The command line's names:
/// the default (file), <c>--hugepages</c> (HugePages), <c>--no-mmap</c> (Heap); <c>bench --memory</c> names all four.
/// </summary>
public enum ModelMemoryMode
{
    /// <summary>mmap of the file itself (read-only); the default.</summary>
    FileMapping,
    /// <summary>Anonymous 2 MiB huge pages (hugetlbfs pool), laid out by the loader with every slide reserved.</summary>
    HugePages,
    /// <summary>Anonymous normal pages (transparent huge pages requested), laid out by the loader.</summary>
    Anonymous,
    /// <summary>No mmap: the file is read into heap memory laid out by the loader.</summary>
    Heap,
}

using Microsoft.Win32.SafeHandles;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Loading;

/// <summary>Creates the host mappings the loader fills and imports from (a seam so tests can observe teardown).</summary>
public interface IMappingFactory
{
    /// <summary>Read-only shared mapping of the file (<c>MAP_SHARED</c>, why: docs/architecture.md#memory-model).</summary>
    IModelMapping MapFile(string path);

    /// <summary>Anonymous mapping of <paramref name="length"/> bytes (huge pages when <paramref name="hugePages"/>), writable until sealed.</summary>
    IModelMapping CreateAnonymous(string sourcePath, long length, bool hugePages);

    /// <summary>Heap memory of <paramref name="length"/> bytes (no mmap).</summary>
    IModelMapping CreateHeap(string sourcePath, long length);

    /// <summary>Reads file bytes straight into the mapping through its write API.</summary>
    void CopyFromFile(IModelMapping target, SafeFileHandle file, long fileOffset, long mappingOffset, long length, CancellationToken cancellation);
}

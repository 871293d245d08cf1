using Microsoft.Win32.SafeHandles;
using PluginEngine.Abstractions;
using PluginEngine.Core.Memory;

namespace PluginEngine.Core.Loading;

/// <summary>The real mappings: mmap of the file, anonymous/hugetlb pages, heap memory.</summary>
public sealed class SystemMappingFactory : IMappingFactory
{
    public static SystemMappingFactory Instance { get; } = new();

    public IModelMapping MapFile(string path) => FileMapping.Open(path);

    public IModelMapping CreateAnonymous(string sourcePath, long length, bool hugePages) => AnonymousMapping.Create(sourcePath, length, hugePages);

    public IModelMapping CreateHeap(string sourcePath, long length) => HeapMapping.Create(sourcePath, length);

    public void CopyFromFile(IModelMapping target, SafeFileHandle file, long fileOffset, long mappingOffset, long length, CancellationToken cancellation)
        => MappingFill.CopyFromFile(target, file, fileOffset, mappingOffset, length, cancellation);
}

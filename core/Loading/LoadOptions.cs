namespace PluginEngine.Core.Loading;

/// <summary>Everything that decides how a model's weights are placed.</summary>
/// <param name="Memory">How the file's bytes are held in host memory.</param>
/// <param name="HostImport">The host-import switch.</param>
public sealed record LoadOptions(ModelMemoryMode Memory, HostImportSetting HostImport)
{
    /// <summary>File mapping, import auto.</summary>
    public static LoadOptions Default { get; } = new(ModelMemoryMode.FileMapping, HostImportSetting.Default);

    /// <summary>
    /// Builds options from the user-facing switches, rejecting impossible combinations with a message that says why:
    /// <c>--hugepages</c> with <c>--no-mmap</c>, and <c>--hugepages</c> off Linux.
    /// </summary>
    public static LoadOptions FromSwitches(bool useMmap, bool hugePages, HostImportSetting hostImport, bool isLinux)
    {
        if (hugePages && !useMmap)
            throw new LoadOptionsException("--hugepages cannot be combined with --no-mmap: huge pages are an anonymous mmap; drop one of the two");
        if (hugePages && !isLinux)
            throw new LoadOptionsException("--hugepages is only supported on Linux (it needs MAP_HUGETLB and the hugetlbfs pool)");
        var memory = hugePages ? ModelMemoryMode.HugePages : useMmap ? ModelMemoryMode.FileMapping : ModelMemoryMode.Heap;
        return new LoadOptions(memory, hostImport);
    }
}

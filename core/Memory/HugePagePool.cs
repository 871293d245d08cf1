using System.Globalization;

namespace PluginEngine.Core.Memory;

/// <summary>
/// The kernel's pool of 2 MiB huge pages (hugetlbfs), as sysfs reports it. Hugetlb mappings draw from it;
/// when it is too small, a <c>MAP_HUGETLB|MAP_POPULATE</c> mapping fails at map time.
/// </summary>
/// <param name="IsAvailable">False when this system exposes no 2 MiB pool (no sysfs entry, not Linux).</param>
/// <param name="TotalPages">Pages reserved in the pool (<c>nr_hugepages</c>).</param>
/// <param name="FreePages">Pages not yet in use (<c>free_hugepages</c>).</param>
/// <param name="PageSize">Bytes per page (2 MiB).</param>
public sealed record HugePagePool(bool IsAvailable, long TotalPages, long FreePages, long PageSize)
{
    /// <summary>Size of the pages this pool holds, and of every hugetlb mapping's pages.</summary>
    public const long HugePageSize = 2L * 1024 * 1024;

    /// <summary>Where sysfs describes the 2 MiB pool.</summary>
    public const string SysfsDirectory = "/sys/kernel/mm/hugepages/hugepages-2048kB";

    /// <summary>Reads the pool from sysfs; <see cref="IsAvailable"/> is false when sysfs lacks it.</summary>
    public static HugePagePool Query() => Query(SysfsDirectory);

    /// <summary>Reads the pool from <paramref name="sysfsDirectory"/> (a parameter so tests can point elsewhere).</summary>
    internal static HugePagePool Query(string sysfsDirectory)
    {
        long? total = ReadCount(Path.Combine(sysfsDirectory, "nr_hugepages"));
        long? free = ReadCount(Path.Combine(sysfsDirectory, "free_hugepages"));
        return total is null || free is null
            ? new HugePagePool(false, 0, 0, HugePageSize)
            : new HugePagePool(true, total.Value, free.Value, HugePageSize);
    }

    /// <summary>Number of pages needed to hold <paramref name="bytes"/>.</summary>
    public long PagesFor(long bytes) => (bytes + PageSize - 1) / PageSize;

    /// <summary>"3 free of 4 total 2 MiB pages", or "not available".</summary>
    public override string ToString() =>
        IsAvailable ? $"{FreePages} free of {TotalPages} total 2 MiB pages" : $"2 MiB huge pages not available ({SysfsDirectory} missing)";

    private static long? ReadCount(string file)
    {
        try
        {
            string text = File.ReadAllText(file).Trim();
            return long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long value) ? value : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>
/// A hugetlb mapping could not be made because the 2 MiB page pool is too small (or absent). The message says
/// how many pages are needed, how many are free of how many reserved, and how to reserve more.
/// </summary>
public sealed class HugePagesUnavailableException : IOException
{
    /// <summary>Builds the exception for a mapping of <paramref name="neededPages"/> pages that failed with <paramref name="errno"/>.</summary>
    public HugePagesUnavailableException(string sourcePath, long neededPages, HugePagePool pool, int errno)
        : base(Describe(sourcePath, neededPages, pool, errno))
    {
        SourcePath = sourcePath;
        NeededPages = neededPages;
        Pool = pool;
        Errno = errno;
    }

    /// <summary>The model file the mapping was for.</summary>
    public string SourcePath { get; }

    /// <summary>2 MiB pages the mapping needed.</summary>
    public long NeededPages { get; }

    /// <summary>The pool as it was read right after the failure.</summary>
    public HugePagePool Pool { get; }

    /// <summary>The errno mmap failed with.</summary>
    public int Errno { get; }

    private static string Describe(string sourcePath, long neededPages, HugePagePool pool, int errno)
    {
        string needed = $"needs {neededPages} huge pages of 2 MiB ({neededPages * 2} MiB)";
        string cause = $"mmap(MAP_HUGETLB|MAP_POPULATE) failed with {LibC.DescribeErrno(errno)}";
        if (!pool.IsAvailable)
        {
            return $"Hugetlb mapping for '{sourcePath}' {needed}, but this system has no 2 MiB huge page pool " +
                   $"({HugePagePool.SysfsDirectory} is missing); {cause}. Run without --hugepages.";
        }

        if (pool.FreePages >= neededPages)
        {
            // The pool had enough pages when read after the failure: either another process freed them meanwhile or
            // a limit other than the pool refused (hugetlb cgroup limit, NUMA memory policy).
            return $"Hugetlb mapping for '{sourcePath}' {needed}; the pool now has {pool.FreePages} free of {pool.TotalPages} total, " +
                   $"yet {cause}. Check the hugetlb cgroup limit and memory policy, or run without --hugepages.";
        }

        // Reserving this many in total leaves the pages already in use where they are and frees enough for this model.
        long suggested = pool.TotalPages + Math.Max(neededPages - pool.FreePages, 0);
        return $"Hugetlb mapping for '{sourcePath}' {needed}, but the pool has {pool.FreePages} free of {pool.TotalPages} total; {cause}. " +
               $"Reserve more as root with: echo {suggested} > /proc/sys/vm/nr_hugepages (or run without --hugepages).";
    }
}

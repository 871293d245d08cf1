using System.Globalization;
using PluginEngine.Abstractions;
using PluginEngine.Core.Memory;
using Xunit;

namespace PluginEngine.Tests.Memory;

/// <summary>Tests that read or change the system's 2 MiB page pool run one at a time.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class HugePagePoolCollection
{
    public const string Name = "2 MiB huge page pool";
}

[Collection(HugePagePoolCollection.Name)]
public class HugePageMappingTests
{
    private const long TwoMiB = 2L * 1024 * 1024;
    private const string Source = "/models/hugetlb-test.gguf";
    private const string NrHugePages = "/proc/sys/vm/nr_hugepages";

    [Fact]
    public void Pool_query_reads_sysfs()
    {
        Platform.RequireLinux();
        if (!Directory.Exists(HugePagePool.SysfsDirectory))
        {
            Assert.False(HugePagePool.Query().IsAvailable);
            return;
        }

        var pool = HugePagePool.Query();

        Assert.True(pool.IsAvailable);
        Assert.Equal(TwoMiB, pool.PageSize);
        Assert.Equal(ReadSysfs("nr_hugepages"), pool.TotalPages);
        Assert.Equal(ReadSysfs("free_hugepages"), pool.FreePages);
        Assert.Equal(3, pool.PagesFor(2 * TwoMiB + 1));
        Assert.Contains($"{pool.FreePages} free of {pool.TotalPages} total", pool.ToString());
    }

    [Fact]
    public void A_pool_missing_from_sysfs_reads_as_not_available()
    {
        var pool = HugePagePool.Query(Path.Combine(Path.GetTempPath(), $"pe-no-hugepages-{Guid.NewGuid():N}"));

        Assert.False(pool.IsAvailable);
        Assert.Contains("not available", pool.ToString());
        var error = new HugePagesUnavailableException(Source, 4, pool, errno: 12);
        Assert.Contains("needs 4 huge pages", error.Message);
        Assert.Contains("no 2 MiB huge page pool", error.Message);
    }

    [Fact]
    public void A_failure_with_enough_free_pages_points_past_the_pool()
    {
        var error = new HugePagesUnavailableException(Source, 4, new HugePagePool(true, 10, 6, TwoMiB), errno: 12);

        Assert.Contains("needs 4 huge pages", error.Message);
        Assert.Contains("6 free of 10 total", error.Message);
        Assert.Contains("cgroup", error.Message);
        Assert.DoesNotContain("echo", error.Message);
    }

    [Fact]
    public void A_request_larger_than_the_free_pool_fails_with_needed_and_free_counts()
    {
        Platform.RequireLinux();
        if (File.Exists("/proc/sys/vm/nr_overcommit_hugepages") && ReadLong("/proc/sys/vm/nr_overcommit_hugepages") > 0)
        {
            Assert.Skip("nr_overcommit_hugepages > 0: the kernel may grow the pool on demand, so no request is sure to fail.");
        }

        var before = HugePagePool.Query();
        long needed = before.FreePages + 3;

        var error = Assert.Throws<HugePagesUnavailableException>(
            () => AnonymousMapping.Create(Source, needed * TwoMiB - 100, hugePages: true));

        Assert.Equal(needed, error.NeededPages);
        Assert.Contains($"needs {needed} huge pages", error.Message);
        Assert.Contains(Source, error.Message);
        Assert.Contains("ENOMEM", error.Message);
        if (before.IsAvailable)
        {
            Assert.True(error.Pool.FreePages < needed);
            Assert.Contains($"{error.Pool.FreePages} free of {error.Pool.TotalPages} total", error.Message);
            long suggested = error.Pool.TotalPages + (needed - error.Pool.FreePages);
            Assert.Contains($"echo {suggested} > /proc/sys/vm/nr_hugepages", error.Message);
        }
    }

    [Fact]
    public void Reserved_huge_pages_back_a_mapping_that_seals_read_only()
    {
        Platform.RequireLinux();
        const long neededPages = 3;
        var pool = HugePagePool.Query();
        if (!pool.IsAvailable)
        {
            Assert.Skip($"No 2 MiB huge page pool on this system: {pool}.");
        }

        long? restoreTo = null;
        if (pool.FreePages < neededPages)
        {
            if (!Environment.IsPrivilegedProcess)
            {
                Assert.Skip($"Needs {neededPages} free 2 MiB pages ({pool}) and root to reserve them in {NrHugePages}.");
            }

            restoreTo = pool.TotalPages;
            File.WriteAllText(NrHugePages, (pool.TotalPages + neededPages - pool.FreePages).ToString(CultureInfo.InvariantCulture));
        }

        try
        {
            var reserved = HugePagePool.Query();
            if (reserved.FreePages < neededPages)
            {
                Assert.Skip($"The kernel could not reserve {neededPages} huge pages (fragmented memory?): {reserved}.");
            }

            using (var mapping = AnonymousMapping.Create(Source, 2 * TwoMiB + 1, hugePages: true))
            {
                Assert.Equal(MappingBacking.HugePages, mapping.Backing);
                Assert.Equal(MappingWritability.WritableDuringLoad, mapping.Writability);
                Assert.Equal(TwoMiB, mapping.PageSize);
                Assert.Equal(neededPages * TwoMiB, mapping.Length);
                Assert.Equal(0, mapping.BaseAddress % TwoMiB);
                Assert.True(mapping.KnownZero);

                // MAP_POPULATE took the pages at map time, not at first touch.
                Assert.Equal(reserved.FreePages - neededPages, HugePagePool.Query().FreePages);
                Assert.True(mapping.Read(0, (int)mapping.Length).IndexOfAnyExcept((byte)0) < 0, "fresh huge pages must read zero");

                byte[] payload = TempModelFile.Pattern(5000);
                using (var window = mapping.OpenWrite(TwoMiB - 2000, payload.Length))
                {
                    payload.CopyTo(window.Bytes);
                }

                mapping.Seal();

                Assert.All(ProcSelfMaps.PermissionsOf(mapping.BaseAddress, mapping.Length), perms => Assert.Equal("r--p", perms));
                Assert.Throws<MappingWriteRefusedException>(() => mapping.OpenWrite(0, 1));
                Assert.Equal(payload, mapping.Read(TwoMiB - 2000, payload.Length).ToArray());

                using var lease = mapping.AcquireLease(TwoMiB, TwoMiB, "hip:0 import");
                Assert.Throws<ArgumentOutOfRangeException>(() => mapping.AcquireLease(4096, 4096, "4 KiB-aligned is not enough"));
            }

            Assert.Equal(reserved.FreePages, HugePagePool.Query().FreePages);
        }
        finally
        {
            if (restoreTo is long total)
            {
                File.WriteAllText(NrHugePages, total.ToString(CultureInfo.InvariantCulture));
            }
        }
    }

    private static long ReadSysfs(string name) => ReadLong(Path.Combine(HugePagePool.SysfsDirectory, name));

    private static long ReadLong(string path) => long.Parse(File.ReadAllText(path).Trim(), CultureInfo.InvariantCulture);
}

using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Shared;

/// <summary>An integrated GPU's memory from /proc/meminfo, with and without a reserved huge page pool.</summary>
public sealed class SystemMemoryTests
{
    private const long KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

    // A 128 GiB APU (Strix Halo class) with no pool.
    private const string NoPool = """
        MemTotal:       131072000 kB
        MemFree:        100000000 kB
        MemAvailable:   120000000 kB
        Buffers:          200000 kB
        Cached:         18000000 kB
        HugePages_Total:       0
        HugePages_Free:        0
        HugePages_Rsvd:        0
        HugePages_Surp:        0
        Hugepagesize:       2048 kB
        Hugetlb:               0 kB
        """;

    // The same machine with 20,480 × 2 MiB = 40 GiB reserved, 2,048 pages (4 GiB) of them still free.
    private const string WithPool = """
        MemTotal:       131072000 kB
        MemFree:         70000000 kB
        MemAvailable:    78000000 kB
        HugePages_Total:   20480
        HugePages_Free:     2048
        HugePages_Rsvd:        0
        HugePages_Surp:        0
        Hugepagesize:       2048 kB
        Hugetlb:        41943040 kB
        """;

    [Fact]
    public void Without_a_pool_total_is_MemTotal_and_free_is_MemAvailable()
    {
        var m = SystemMemory.Parse(NoPool)!.Value;
        Assert.Equal(131072000 * KiB, m.Total);
        Assert.Equal(120000000 * KiB, m.Available);
        Assert.Equal(0, m.HugePagePool);
        Assert.Equal("", m.PoolNote);
    }

    [Fact]
    public void A_reserved_pool_is_neither_device_memory_nor_free()
    {
        var m = SystemMemory.Parse(WithPool)!.Value;
        Assert.Equal(40 * GiB, m.HugePagePool);
        Assert.Equal(4 * GiB, m.HugePagePoolFree);
        Assert.Equal(131072000 * KiB - 40 * GiB, m.Total);   // the pool is taken out of the total...
        Assert.Equal(78000000 * KiB, m.Available);          // ...and its free pages are not counted as free device memory
        Assert.True(m.Available <= m.Total);
        Assert.Equal("huge page pool 40.0 GiB (4.0 GiB free) not counted as device memory", m.PoolNote);
    }

    [Fact]
    public void One_gigabyte_pages_are_sized_by_Hugepagesize()
    {
        var m = SystemMemory.Parse("MemTotal: 67108864 kB\nMemAvailable: 30000000 kB\nHugePages_Total: 16\nHugePages_Free: 16\nHugepagesize: 1048576 kB\n")!.Value;
        Assert.Equal(16 * GiB, m.HugePagePool);
        Assert.Equal(48 * GiB, m.Total);
    }

    [Fact]
    public void An_old_kernel_without_MemAvailable_falls_back_to_MemFree_and_free_never_exceeds_total()
    {
        var m = SystemMemory.Parse("MemTotal: 1000 kB\nMemFree: 400 kB\n")!.Value;
        Assert.Equal(400 * KiB, m.Available);
        // A pool larger than what MemAvailable leaves (inconsistent snapshot): clamped, never negative.
        var odd = SystemMemory.Parse("MemTotal: 1000 kB\nMemAvailable: 900 kB\nHugePages_Total: 4\nHugepagesize: 200 kB\n")!.Value;
        Assert.Equal(200 * KiB, odd.Total);
        Assert.Equal(200 * KiB, odd.Available);
    }

    [Theory]
    [InlineData("")]
    [InlineData("MemFree: 100 kB\n")]
    [InlineData("garbage without colons")]
    public void Text_without_MemTotal_is_no_reading(string text) => Assert.Null(SystemMemory.Parse(text));

    [Fact]
    public void This_machine_has_a_readable_meminfo()
    {
        if (!File.Exists("/proc/meminfo")) Assert.Skip("no /proc/meminfo (not Linux)");
        var m = SystemMemory.Read();
        Assert.NotNull(m);
        Assert.True(m.Value.Total > 0 && m.Value.Available > 0 && m.Value.Available <= m.Value.Total);
    }
}

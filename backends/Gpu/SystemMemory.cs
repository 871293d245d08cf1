using System.Globalization;

namespace PluginEngine.Backends.Gpu;

/// <summary>
/// The system's memory as /proc/meminfo reports it, for integrated GPUs (APUs), whose "device memory" is the host's.
/// A reserved huge page pool is counted apart: its pages are neither free for ordinary (or device) allocations nor part
/// of what those can ever get, even while unused, so it is taken out of the total and never counted as free; MemAvailable
/// already leaves it out. (The system this project comes from planned with MemTotal and MemFree and was misled by a pool:
/// it counted the pool's free pages as free device memory, then ran out.) The pool's own free pages are reported apart:
/// they hold huge-page-backed weights, which the device imports rather than allocates.
/// </summary>
/// <param name="Total">MemTotal less the huge page pool.</param>
/// <param name="Available">MemAvailable (MemFree where the kernel does not report it).</param>
/// <param name="HugePagePool">HugePages_Total × Hugepagesize: the reserved pool.</param>
/// <param name="HugePagePoolFree">HugePages_Free × Hugepagesize.</param>
internal readonly record struct SystemMemory(long Total, long Available, long HugePagePool, long HugePagePoolFree)
{
    /// <summary>Reads /proc/meminfo; null where it does not exist or lacks MemTotal.</summary>
    public static SystemMemory? Read(string path = "/proc/meminfo")
    {
        try { return Parse(File.ReadAllText(path)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Parses meminfo text ("Key:   value kB" lines); null when MemTotal is missing. Unknown lines are ignored.</summary>
    public static SystemMemory? Parse(string meminfo)
    {
        long? total = null, available = null, free = null, hugeTotal = null, hugeFree = null, hugeSize = null;
        foreach (string rawLine in meminfo.Split('\n'))
        {
            int colon = rawLine.IndexOf(':');
            if (colon <= 0) continue;
            string key = rawLine[..colon].Trim();
            string[] parts = rawLine[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length == 0 || !long.TryParse(parts[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out long value)) continue;
            // Sizes are in kB (meaning KiB); the HugePages_ counts have no unit.
            long bytes = parts.Length > 1 && parts[1] == "kB" ? value * 1024 : value;
            switch (key)
            {
                case "MemTotal": total = bytes; break;
                case "MemAvailable": available = bytes; break;
                case "MemFree": free = bytes; break;
                case "HugePages_Total": hugeTotal = value; break;
                case "HugePages_Free": hugeFree = value; break;
                case "Hugepagesize": hugeSize = bytes; break;
            }
        }
        if (total is null) return null;
        long pool = (hugeTotal ?? 0) * (hugeSize ?? 0), poolFree = (hugeFree ?? 0) * (hugeSize ?? 0);
        long usableTotal = Math.Max(0, total.Value - pool);
        long avail = Math.Clamp(available ?? free ?? 0, 0, usableTotal);
        return new SystemMemory(usableTotal, avail, pool, poolFree);
    }

    /// <summary>"huge page pool 40.0 GiB (38.0 GiB free) not counted as device memory", or "" without a pool.</summary>
    public string PoolNote => HugePagePool == 0 ? "" :
        string.Create(CultureInfo.InvariantCulture, $"huge page pool {HugePagePool / (double)(1L << 30):F1} GiB ({HugePagePoolFree / (double)(1L << 30):F1} GiB free) not counted as device memory");
}

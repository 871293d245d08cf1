using System.Globalization;
using Xunit;

namespace PluginEngine.Tests.Memory;

/// <summary>A file with known content in the temp folder, deleted on dispose.</summary>
internal sealed class TempModelFile : IDisposable
{
    public TempModelFile(byte[] content)
    {
        Content = content;
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"pe-mapping-{Guid.NewGuid():N}.gguf");
        File.WriteAllBytes(Path, content);
    }

    public string Path { get; }

    public byte[] Content { get; }

    /// <summary>Bytes that differ at every offset of a page and between pages (so misplaced copies show).</summary>
    public static byte[] Pattern(int length, int seed = 7)
    {
        var bytes = new byte[length];
        for (int i = 0; i < length; i++)
        {
            bytes[i] = (byte)((i * 31) ^ (i >> 8) ^ seed);
        }

        return bytes;
    }

    public void Dispose() => File.Delete(Path);
}

/// <summary>Reads page protections of this process from /proc/self/maps (no child process needed).</summary>
internal static class ProcSelfMaps
{
    /// <summary>Permission strings ("r--p", "rw-p", ...) of every VMA overlapping [start, start+length); asserts they cover it all.</summary>
    public static IReadOnlyList<string> PermissionsOf(nint start, long length)
    {
        ulong first = (ulong)start;
        ulong end = first + (ulong)length;
        var found = new List<(ulong From, ulong To, string Perms)>();
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            // "7f1234000000-7f1234200000 rw-p 00000000 00:00 0   [path]"
            int dash = line.IndexOf('-');
            int space = line.IndexOf(' ');
            ulong from = ulong.Parse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            ulong to = ulong.Parse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if (from < end && to > first)
            {
                found.Add((from, to, line.Substring(space + 1, 4)));
            }
        }

        Assert.NotEmpty(found);
        found.Sort((a, b) => a.From.CompareTo(b.From));
        Assert.True(found[0].From <= first, $"no VMA starts at or before 0x{first:x}");
        for (int i = 1; i < found.Count; i++)
        {
            Assert.Equal(found[i - 1].To, found[i].From);
        }

        Assert.True(found[^1].To >= end, $"VMAs end at 0x{found[^1].To:x}, before 0x{end:x}");
        return found.Select(f => f.Perms).ToArray();
    }
}

/// <summary>Skips a test that needs Linux mmap.</summary>
internal static class Platform
{
    public static void RequireLinux()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.Skip("mmap-backed mappings exist on Linux only.");
        }
    }
}

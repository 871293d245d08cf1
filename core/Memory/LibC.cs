using System.Runtime.InteropServices;

namespace PluginEngine.Core.Memory;

/// <summary>
/// The few libc calls the mappings need, with the Linux constants they take.
/// Constant values are those of the generic Linux ABI shared by x86-64 and arm64;
/// <see cref="EnsureSupported"/> refuses other platforms before any call is made.
/// </summary>
internal static partial class LibC
{
    public const int O_RDONLY = 0x0;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    public const int AT_EMPTY_PATH = 0x1000;
    public const uint STATX_TYPE = 0x1;
    public const uint STATX_SIZE = 0x200;
    public const int S_IFMT = 0xF000;
    public const int S_IFREG = 0x8000;

    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;

    public const int MAP_SHARED = 0x01;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_POPULATE = 0x8000;
    public const int MAP_HUGETLB = 0x40000;

    public const int MADV_WILLNEED = 3;
    public const int MADV_HUGEPAGE = 14;


    /// <summary>mmap's error return, (void*)-1.</summary>
    public static readonly nint MapFailed = -1;

    // open(2) is variadic in C; passing the mode explicitly keeps the call's argument list fixed.
    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    // statx rather than fstat: its struct layout is the same on every architecture.
    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static unsafe partial int StatX(int dirFd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    public static partial nint MMap(nint address, nuint length, int protection, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    public static partial int MUnmap(nint address, nuint length);

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    public static partial int MProtect(nint address, nuint length, int protection);

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    public static partial int MAdvise(nint address, nuint length, int advice);

    /// <summary>
    /// File type bits (<c>st_mode &amp; S_IFMT</c>) and size of an open descriptor, like fstat. Returns false with
    /// <paramref name="errno"/> set when the call fails.
    /// </summary>
    public static unsafe bool TryStat(int fd, out int fileType, out long size, out int errno)
    {
        // struct statx is 256 bytes: stx_mode is a u16 at byte 28, stx_size a u64 at byte 40.
        byte* buffer = stackalloc byte[256];
        if (StatX(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_SIZE, buffer) != 0)
        {
            errno = Marshal.GetLastPInvokeError();
            fileType = 0;
            size = 0;
            return false;
        }

        errno = 0;
        fileType = *(ushort*)(buffer + 28) & S_IFMT;
        size = *(long*)(buffer + 40);
        return true;
    }

    /// <summary>Names a file type from <see cref="TryStat"/> for messages.</summary>
    public static string DescribeFileType(int fileType) => fileType switch
    {
        0x1000 => "a FIFO",
        0x2000 => "a character device",
        0x4000 => "a directory",
        0x6000 => "a block device",
        0x8000 => "a regular file",
        0xC000 => "a socket",
        _ => $"a file of type 0{Convert.ToString(fileType, 8)}",
    };

    /// <summary>Throws <see cref="PlatformNotSupportedException"/> unless this is Linux on x86-64 or arm64.</summary>
    public static void EnsureSupported(string what)
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException(
                $"{what} needs Linux (mmap/mprotect through libc); this is {RuntimeInformation.OSDescription}. " +
                "Use the heap backing (--no-mmap) on other systems.");
        }

        var arch = RuntimeInformation.ProcessArchitecture;
        if (arch is not (Architecture.X64 or Architecture.Arm64))
        {
            throw new PlatformNotSupportedException(
                $"{what} is built for Linux on x64 or arm64 (their mmap flag values); this process is {arch}.");
        }
    }

    /// <summary>Formats errno like strerror, with its symbolic name: "ENOMEM (12): Cannot allocate memory".</summary>
    public static string DescribeErrno(int errno)
    {
        string name = errno switch
        {
            1 => "EPERM",
            2 => "ENOENT",
            5 => "EIO",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            13 => "EACCES",
            14 => "EFAULT",
            16 => "EBUSY",
            19 => "ENODEV",
            20 => "ENOTDIR",
            21 => "EISDIR",
            22 => "EINVAL",
            23 => "ENFILE",
            24 => "EMFILE",
            27 => "EFBIG",
            29 => "ESPIPE",
            36 => "ENAMETOOLONG",
            40 => "ELOOP",
            75 => "EOVERFLOW",
            _ => "errno",
        };
        return $"{name} ({errno}): {Marshal.GetPInvokeErrorMessage(errno)}";
    }
}

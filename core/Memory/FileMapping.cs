using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Memory;

/// <summary>
/// A GGUF file mapped in place: <c>mmap(PROT_READ, MAP_SHARED)</c> of a read-only descriptor. Never written,
/// ever: <see cref="ModelMapping.OpenWrite"/> always refuses, so the SIGSEGV of writing a read-only page
/// cannot be expressed, and the kernel refuses to make the pages writable at all (mprotect(PROT_WRITE) of a shared
/// mapping of an O_RDONLY descriptor fails with EACCES; a private mapping would allow it, as copy-on-write).
/// Shared rather than private (docs/architecture.md#memory-model) because pinning a private read-only file mapping for a GPU does
/// not work: on an H200 (driver 580), cuMemHostRegister(READ_ONLY) of a 64 MiB private range did not return in 45 s,
/// while the same 620 MB file mapped shared registered in 22 ms (scripts/device/probe-host-register.py). Pages that are
/// never written are the page cache's pages either way, so nothing else changes. Bytes past the end of the file inside
/// the last page read zero. As with any mmap, truncating the file while it is mapped makes reads of the lost pages fault
/// (SIGBUS); model files must not be rewritten in place while loaded.
/// </summary>
public sealed class FileMapping : ModelMapping
{
    private readonly SafeFileHandle _file;

    private FileMapping(string path, SafeFileHandle file, nint baseAddress, long length)
        : base(path, MappingBacking.File, MappingWritability.ReadOnly, knownZero: false, baseAddress, length, Environment.SystemPageSize)
    {
        _file = file;
    }

    /// <summary>
    /// Maps the whole file at <paramref name="path"/> read-only. Throws <see cref="FileNotFoundException"/> for
    /// a missing file, <see cref="UnauthorizedAccessException"/> when it cannot be opened for reading,
    /// <see cref="InvalidDataException"/> for an empty file or anything but a regular file, and <see cref="IOException"/> when
    /// mmap fails; every message names the file and the failing call's errno.
    /// </summary>
    public static FileMapping Open(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        LibC.EnsureSupported("Mapping a model file");

        string fullPath = Path.GetFullPath(path);

        // O_NONBLOCK only matters for a FIFO, whose open would otherwise wait for a writer forever; it is then
        // refused below as not a regular file. Regular files ignore it.
        int fd = LibC.Open(fullPath, LibC.O_RDONLY | LibC.O_CLOEXEC | LibC.O_NONBLOCK, 0);
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            string message = $"Cannot open model file '{fullPath}' for reading: open(O_RDONLY) failed with {LibC.DescribeErrno(errno)}.";
            throw errno switch
            {
                2 => new FileNotFoundException(message, fullPath),
                1 or 13 => new UnauthorizedAccessException(message),
                _ => new IOException(message),
            };
        }

        var file = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            if (!LibC.TryStat(fd, out int fileType, out long length, out int statErrno))
            {
                throw new IOException(
                    $"Cannot map model file '{fullPath}': statx on its descriptor failed with {LibC.DescribeErrno(statErrno)}.");
            }

            if (fileType != LibC.S_IFREG)
            {
                throw new InvalidDataException(
                    $"Cannot map model file '{fullPath}': it is {LibC.DescribeFileType(fileType)}, not a regular file.");
            }

            if (length == 0)
            {
                throw new InvalidDataException($"Cannot map model file '{fullPath}': it is empty (0 bytes).");
            }

            nint address = LibC.MMap(0, (nuint)length, LibC.PROT_READ, LibC.MAP_SHARED, fd, 0);
            if (address == LibC.MapFailed)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw new IOException(
                    $"Cannot map model file '{fullPath}' ({length} bytes): mmap(PROT_READ, MAP_SHARED) failed with {LibC.DescribeErrno(errno)}.");
            }

            return new FileMapping(fullPath, file, address, length);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    protected override void ReleasePages()
    {
        if (LibC.MUnmap(BaseAddress, (nuint)Length) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"munmap of the file mapping of '{SourcePath}' ({Length} bytes) failed with {LibC.DescribeErrno(errno)}.");
        }
    }

    /// <inheritdoc />
    protected override void CloseSource() => _file.Dispose();
}

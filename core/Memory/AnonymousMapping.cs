using System.Runtime.InteropServices;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Memory;

/// <summary>
/// Fresh anonymous pages (known zero) that the loader fills by reading the file, then seals read-only with
/// <c>mprotect(PROT_READ)</c>. Either 2 MiB hugetlb pages (<c>MAP_HUGETLB|MAP_POPULATE</c>, so a short pool
/// fails here rather than with SIGBUS mid-load) or normal pages with transparent huge pages requested.
/// </summary>
public sealed class AnonymousMapping : ModelMapping
{
    private AnonymousMapping(string sourcePath, MappingBacking backing, nint baseAddress, long length, long pageSize)
        : base(sourcePath, backing, MappingWritability.WritableDuringLoad, knownZero: true, baseAddress, length, pageSize)
    {
    }

    /// <summary>
    /// Maps at least <paramref name="length"/> bytes (rounded up to the page size: 2 MiB with
    /// <paramref name="hugePages"/>, the system page otherwise) of zeroed, writable, private anonymous memory for
    /// the model file at <paramref name="sourcePath"/>. With <paramref name="hugePages"/>, a pool too small
    /// throws <see cref="HugePagesUnavailableException"/> with the needed and free page counts.
    /// </summary>
    public static AnonymousMapping Create(string sourcePath, long length, bool hugePages)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(sourcePath);
        if (length <= 0)
        {
            throw new ArgumentOutOfRangeException(
                nameof(length), $"An anonymous mapping for '{sourcePath}' needs a positive length; got {length}.");
        }

        LibC.EnsureSupported(hugePages ? "A hugetlb mapping" : "An anonymous mapping");

        long pageSize = hugePages ? HugePagePool.HugePageSize : Environment.SystemPageSize;
        long mappedLength = RoundUp(length, pageSize);
        int flags = LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS;
        if (hugePages)
        {
            flags |= LibC.MAP_HUGETLB | LibC.MAP_POPULATE;
        }

        nint address = LibC.MMap(0, (nuint)mappedLength, LibC.PROT_READ | LibC.PROT_WRITE, flags, -1, 0);
        if (address == LibC.MapFailed)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (hugePages)
            {
                throw new HugePagesUnavailableException(sourcePath, mappedLength / pageSize, HugePagePool.Query(), errno);
            }

            throw new IOException(
                $"Cannot map {mappedLength} bytes of anonymous memory for '{sourcePath}': mmap(MAP_PRIVATE|MAP_ANONYMOUS) " +
                $"failed with {LibC.DescribeErrno(errno)}.");
        }

        if (!hugePages)
        {
            // Transparent huge pages cut TLB misses on multi-GB weights; a kernel that refuses still gives normal pages.
            _ = LibC.MAdvise(address, (nuint)mappedLength, LibC.MADV_HUGEPAGE);
        }

        return new AnonymousMapping(
            sourcePath, hugePages ? MappingBacking.HugePages : MappingBacking.Anonymous, address, mappedLength, pageSize);
    }

    /// <inheritdoc />
    protected override void ProtectPagesOnSeal()
    {
        if (LibC.MProtect(BaseAddress, (nuint)Length, LibC.PROT_READ) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException(
                $"Sealing the {Backing} mapping of '{SourcePath}' ({Length} bytes) failed: mprotect(PROT_READ) returned {LibC.DescribeErrno(errno)}.");
        }
    }

    /// <inheritdoc />
    protected override void ReleasePages()
    {
        if (LibC.MUnmap(BaseAddress, (nuint)Length) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException(
                $"munmap of the {Backing} mapping of '{SourcePath}' ({Length} bytes) failed with {LibC.DescribeErrno(errno)}.");
        }
    }
}

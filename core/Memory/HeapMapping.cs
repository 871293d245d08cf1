using System.Runtime.InteropServices;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Memory;

/// <summary>
/// Page-aligned, zeroed native memory filled by reading the file (the <c>--no-mmap</c> path). Always writable
/// until sealed; sealing is logical only (later writes are refused by the API, the pages stay writable).
/// Works on every platform.
/// </summary>
public sealed class HeapMapping : ModelMapping
{
    private HeapMapping(string sourcePath, nint baseAddress, long length, long pageSize)
        : base(sourcePath, MappingBacking.Heap, MappingWritability.Writable, knownZero: true, baseAddress, length, pageSize)
    {
    }

    /// <summary>
    /// Allocates <paramref name="length"/> bytes (rounded up to the system page size, so whole pages can be
    /// leased) aligned to the page size, and zeroes them.
    /// </summary>
    public static unsafe HeapMapping Create(string sourcePath, long length)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(sourcePath);
        if (length <= 0)
        {
            throw new ArgumentOutOfRangeException(
                nameof(length), $"A heap mapping for '{sourcePath}' needs a positive length; got {length}.");
        }

        long pageSize = Environment.SystemPageSize;
        long allocated = RoundUp(length, pageSize);
        void* memory;
        try
        {
            memory = NativeMemory.AlignedAlloc((nuint)allocated, (nuint)pageSize);
        }
        catch (OutOfMemoryException e)
        {
            throw new OutOfMemoryException(
                $"Cannot allocate {allocated} bytes of heap memory for '{sourcePath}' (no-mmap load).", e);
        }

        // Zeroed so that KnownZero holds: padding the loader never writes reads as zero.
        NativeMemory.Clear(memory, (nuint)allocated);
        return new HeapMapping(sourcePath, (nint)memory, allocated, pageSize);
    }

    /// <inheritdoc />
    protected override unsafe void ReleasePages() => NativeMemory.AlignedFree((void*)BaseAddress);
}

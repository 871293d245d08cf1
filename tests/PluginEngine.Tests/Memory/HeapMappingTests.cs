using PluginEngine.Abstractions;
using PluginEngine.Core.Memory;
using Xunit;

namespace PluginEngine.Tests.Memory;

public class HeapMappingTests
{
    private const string Source = "/models/heap-test.gguf";

    [Fact]
    public void Memory_is_page_aligned_zeroed_and_writable()
    {
        using var mapping = HeapMapping.Create(Source, 10_000);

        Assert.Equal(MappingBacking.Heap, mapping.Backing);
        Assert.Equal(MappingWritability.Writable, mapping.Writability);
        Assert.True(mapping.KnownZero);
        Assert.True(mapping.CanWrite);
        Assert.Equal(0, mapping.BaseAddress % mapping.PageSize);
        Assert.True(mapping.Length >= 10_000);
        Assert.Equal(0, mapping.Length % mapping.PageSize);
        Assert.True(mapping.Read(0, (int)mapping.Length).IndexOfAnyExcept((byte)0) < 0, "heap mapping must be zeroed");
    }

    [Fact]
    public void Seal_refuses_later_writes_and_keeps_bytes()
    {
        using var mapping = HeapMapping.Create(Source, 4096);
        using (var window = mapping.OpenWrite(10, 3))
        {
            window.Bytes.Fill(9);
        }

        mapping.Seal();

        var refused = Assert.Throws<MappingWriteRefusedException>(() => mapping.OpenWrite(10, 3));
        Assert.Contains("sealed", refused.Message);
        Assert.Contains("Heap", refused.Message);
        Assert.Equal(new byte[] { 0, 9, 9, 9, 0 }, mapping.Read(9, 5).ToArray());
    }
}

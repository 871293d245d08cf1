using PluginEngine.Abstractions;
using PluginEngine.Core.Memory;
using Xunit;

namespace PluginEngine.Tests.Memory;

public class AnonymousMappingTests
{
    private const string Source = "/models/anonymous-test.gguf";

    [Fact]
    public void Fresh_pages_are_known_zero_writable_and_page_rounded()
    {
        Platform.RequireLinux();
        using var mapping = AnonymousMapping.Create(Source, 3 * 4096 + 5, hugePages: false);

        Assert.Equal(MappingBacking.Anonymous, mapping.Backing);
        Assert.Equal(MappingWritability.WritableDuringLoad, mapping.Writability);
        Assert.True(mapping.KnownZero);
        Assert.True(mapping.CanWrite);
        Assert.False(mapping.IsSealed);
        Assert.Equal(Environment.SystemPageSize, mapping.PageSize);
        Assert.Equal(4 * 4096, mapping.Length);
        Assert.Equal(Source, mapping.SourcePath);
        Assert.True(mapping.Read(0, (int)mapping.Length).IndexOfAnyExcept((byte)0) < 0, "fresh anonymous pages must read zero");
    }

    [Fact]
    public void Writes_then_seal_refuses_writes_keeps_bytes_and_protects_pages()
    {
        Platform.RequireLinux();
        using var mapping = AnonymousMapping.Create(Source, 2 * 4096, hugePages: false);
        byte[] payload = TempModelFile.Pattern(300);
        using (var window = mapping.OpenWrite(4000, payload.Length))
        {
            payload.CopyTo(window.Bytes);
            Assert.Equal(1, mapping.OpenWindows);
        }

        Assert.Equal(0, mapping.OpenWindows);
        Assert.All(ProcSelfMaps.PermissionsOf(mapping.BaseAddress, mapping.Length), perms => Assert.Equal("rw-p", perms));

        mapping.Seal();

        Assert.True(mapping.IsSealed);
        Assert.False(mapping.CanWrite);
        Assert.All(ProcSelfMaps.PermissionsOf(mapping.BaseAddress, mapping.Length), perms => Assert.Equal("r--p", perms));
        var refused = Assert.Throws<MappingWriteRefusedException>(() => mapping.OpenWrite(0, 8));
        Assert.Contains("sealed", refused.Message);
        Assert.Contains(Source, refused.Message);
        Assert.Contains("Anonymous", refused.Message);
        Assert.Equal(payload, mapping.Read(4000, payload.Length).ToArray());
        Assert.True(mapping.Read(0, 4000).IndexOfAnyExcept((byte)0) < 0, "untouched bytes stay zero");
    }

    [Fact]
    public void Seal_while_a_window_is_open_throws_and_the_mapping_stays_writable()
    {
        Platform.RequireLinux();
        using var mapping = AnonymousMapping.Create(Source, 4096, hugePages: false);
        var window = mapping.OpenWrite(0, 16);

        var error = Assert.Throws<InvalidOperationException>(mapping.Seal);

        Assert.Contains("window", error.Message);
        Assert.False(mapping.IsSealed);
        window.Bytes[0] = 42;
        window.Dispose();
        window.Dispose(); // a second dispose must not close some other window's count
        Assert.Equal(0, mapping.OpenWindows);
        mapping.Seal();
        Assert.Equal(42, mapping.Read(0, 1)[0]);
    }

    [Fact]
    public void Dispose_while_a_window_is_open_throws_and_keeps_the_pages()
    {
        Platform.RequireLinux();
        var mapping = AnonymousMapping.Create(Source, 4096, hugePages: false);
        var window = mapping.OpenWrite(8, 4);

        var error = Assert.Throws<InvalidOperationException>(mapping.Dispose);

        Assert.Contains("window", error.Message);
        Assert.False(mapping.IsDisposed);
        window.Bytes.Fill(5);
        window.Dispose();
        Assert.Equal(5, mapping.Read(8, 1)[0]);
        mapping.Dispose();
        Assert.Throws<ObjectDisposedException>(() => mapping.OpenWrite(0, 1));
        Assert.Throws<ObjectDisposedException>(mapping.Seal);
        Assert.False(mapping.CanWrite);
    }

    [Theory]
    [InlineData(-1L, 4)]
    [InlineData(4090L, 7)]
    [InlineData(0L, -1)]
    [InlineData(long.MaxValue, 1)]
    public void Out_of_range_windows_are_refused(long offset, int length)
    {
        Platform.RequireLinux();
        using var mapping = AnonymousMapping.Create(Source, 4096, hugePages: false);

        var refused = Assert.Throws<MappingWriteRefusedException>(() => mapping.OpenWrite(offset, length));

        Assert.Contains("outside", refused.Message);
        Assert.Contains(offset.ToString(), refused.Message);
        Assert.Equal(0, mapping.OpenWindows);
    }

    [Fact]
    public void Non_positive_length_is_refused()
    {
        Platform.RequireLinux();
        Assert.Throws<ArgumentOutOfRangeException>(() => AnonymousMapping.Create(Source, 0, hugePages: false));
    }
}

using PluginEngine.Abstractions;
using PluginEngine.Core.Memory;
using Xunit;

namespace PluginEngine.Tests.Memory;

public class MappingFillTests
{
    [Fact]
    public void Copies_from_an_unaligned_file_offset_into_the_mapping()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(5 * 4096 + 77));
        using var mapping = AnonymousMapping.Create(file.Path, 6 * 4096, hugePages: false);
        using var handle = File.OpenHandle(file.Path);
        const long fileOffset = 4097;
        const long mappingOffset = 64;
        int length = file.Content.Length - (int)fileOffset;

        MappingFill.CopyFromFile(mapping, handle, fileOffset, mappingOffset, length, TestContext.Current.CancellationToken);

        Assert.Equal(file.Content.AsSpan((int)fileOffset).ToArray(), mapping.Read(mappingOffset, length).ToArray());
        Assert.True(mapping.Read(0, (int)mappingOffset).IndexOfAnyExcept((byte)0) < 0, "bytes before the target range stay zero");
        Assert.Equal(0, mapping.OpenWindows);
    }

    [Fact]
    public void Copies_across_chunk_boundaries()
    {
        using var file = new TempModelFile(TempModelFile.Pattern(10_000, seed: 3));
        using var mapping = HeapMapping.Create(file.Path, 12_000);
        using var handle = File.OpenHandle(file.Path);

        MappingFill.CopyFromFile(mapping, handle, 13, 1000, 9_000, chunkBytes: 1024, TestContext.Current.CancellationToken);

        Assert.Equal(file.Content.AsSpan(13, 9_000).ToArray(), mapping.Read(1000, 9_000).ToArray());
        Assert.Equal(0, mapping.Read(999, 1)[0]);
        Assert.Equal(0, mapping.Read(10_000, 1)[0]);
    }

    [Fact]
    public void A_short_file_is_reported_with_name_and_offset_before_anything_is_written()
    {
        using var file = new TempModelFile(TempModelFile.Pattern(1000));
        using var mapping = HeapMapping.Create(file.Path, 4096);
        using var handle = File.OpenHandle(file.Path);

        var error = Assert.Throws<EndOfStreamException>(
            () => MappingFill.CopyFromFile(mapping, handle, 600, 0, 500, TestContext.Current.CancellationToken));

        Assert.Contains(file.Path, error.Message);
        Assert.Contains("byte offset 600", error.Message);
        Assert.Contains("1000 bytes", error.Message);
        Assert.True(mapping.Read(0, 4096).IndexOfAnyExcept((byte)0) < 0, "nothing may be written");
    }

    [Fact]
    public void A_read_only_target_is_refused()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(4096));
        using var mapping = FileMapping.Open(file.Path);
        using var handle = File.OpenHandle(file.Path);

        Assert.Throws<MappingWriteRefusedException>(
            () => MappingFill.CopyFromFile(mapping, handle, 0, 0, 100, TestContext.Current.CancellationToken));

        Assert.Equal(file.Content, mapping.Read(0, 4096).ToArray());
    }

    [Fact]
    public void A_range_past_the_mapping_is_refused()
    {
        using var file = new TempModelFile(TempModelFile.Pattern(8192));
        using var mapping = HeapMapping.Create(file.Path, 4096);
        using var handle = File.OpenHandle(file.Path);

        var error = Assert.Throws<MappingWriteRefusedException>(
            () => MappingFill.CopyFromFile(mapping, handle, 0, 100, 4096, TestContext.Current.CancellationToken));

        Assert.Contains("outside", error.Message);
    }

    [Fact]
    public void Cancellation_stops_between_chunks()
    {
        using var file = new TempModelFile(TempModelFile.Pattern(4096));
        using var mapping = HeapMapping.Create(file.Path, 4096);
        using var handle = File.OpenHandle(file.Path);
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();

        Assert.Throws<OperationCanceledException>(
            () => MappingFill.CopyFromFile(mapping, handle, 0, 0, 4096, cancelled.Token));

        Assert.True(mapping.Read(0, 4096).IndexOfAnyExcept((byte)0) < 0, "nothing may be written");
        Assert.Equal(0, mapping.OpenWindows);
    }
}

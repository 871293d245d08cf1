using System.Runtime.InteropServices;
using PluginEngine.Abstractions;
using PluginEngine.Core.Memory;
using Xunit;

namespace PluginEngine.Tests.Memory;

public partial class FileMappingTests
{
    [Fact]
    public void Reads_the_files_bytes_and_reports_a_read_only_file_backing()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(3 * 4096 + 123));
        using var mapping = FileMapping.Open(file.Path);

        Assert.Equal(file.Content, mapping.Read(0, file.Content.Length).ToArray());
        Assert.Equal(file.Content.AsSpan(4000, 200).ToArray(), mapping.Read(4000, 200).ToArray());
        Assert.Equal(MappingBacking.File, mapping.Backing);
        Assert.Equal(MappingWritability.ReadOnly, mapping.Writability);
        Assert.Equal(MappingLifetime.LoadScoped, mapping.Lifetime);
        Assert.False(mapping.KnownZero);
        Assert.False(mapping.CanWrite);
        Assert.Equal(file.Content.Length, mapping.Length);
        Assert.Equal(Environment.SystemPageSize, mapping.PageSize);
        Assert.Equal(0, mapping.BaseAddress % mapping.PageSize);
        Assert.Equal(Path.GetFullPath(file.Path), mapping.SourcePath);
    }

    [Fact]
    public void Pages_are_mapped_read_only()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(10_000));
        using var mapping = FileMapping.Open(file.Path);

        Assert.All(ProcSelfMaps.PermissionsOf(mapping.BaseAddress, mapping.Length), perms => Assert.Equal("r--s", perms));
    }

    [Fact]
    public void The_kernel_refuses_to_make_the_pages_writable()
    {
        // A shared mapping of a read-only descriptor cannot gain PROT_WRITE (EACCES): no code path, however wrong, can write it.
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(10_000));
        using var mapping = FileMapping.Open(file.Path);

        int result = LibC.MProtect(mapping.BaseAddress, (nuint)mapping.PageSize, LibC.PROT_READ | LibC.PROT_WRITE);
        int errno = Marshal.GetLastPInvokeError();
        Assert.Equal(-1, result);
        Assert.Equal(13, errno); // EACCES
        Assert.All(ProcSelfMaps.PermissionsOf(mapping.BaseAddress, mapping.Length), perms => Assert.Equal("r--s", perms));
    }

    [Fact]
    public void OpenWrite_is_refused_and_neither_file_nor_mapping_changes()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(5000));
        using var mapping = FileMapping.Open(file.Path);

        var refused = Assert.Throws<MappingWriteRefusedException>(() =>
        {
            using var window = mapping.OpenWrite(100, 16);
            window.Bytes.Fill(0xEE);
        });

        Assert.Contains(mapping.SourcePath, refused.Message);
        Assert.Contains("File", refused.Message);
        Assert.Contains("read-only", refused.Message);
        Assert.Contains("[100, 116)", refused.Message);
        Assert.Equal(0, mapping.OpenWindows);
        Assert.Equal(file.Content, mapping.Read(0, file.Content.Length).ToArray());
        Assert.Equal(file.Content, File.ReadAllBytes(file.Path));
    }

    [Fact]
    public void OpenWrite_stays_refused_after_seal()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(100));
        using var mapping = FileMapping.Open(file.Path);

        mapping.Seal();
        mapping.Seal();

        Assert.True(mapping.IsSealed);
        Assert.Throws<MappingWriteRefusedException>(() => mapping.OpenWrite(0, 1));
        Assert.Equal(file.Content, mapping.Read(0, 100).ToArray());
    }

    [Fact]
    public void Reads_outside_the_file_are_refused_with_the_range()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(100));
        using var mapping = FileMapping.Open(file.Path);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => mapping.Read(90, 11));
        Assert.Contains("[90, 101)", error.Message);
        Assert.Contains(mapping.SourcePath, error.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => mapping.Read(-1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => mapping.Read(0, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => mapping.Read(long.MaxValue, 1));
        Assert.Equal(10, mapping.Read(90, 10).Length);
    }

    [Fact]
    public void An_empty_file_is_refused_by_name()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile([]);

        var error = Assert.Throws<InvalidDataException>(() => FileMapping.Open(file.Path));

        Assert.Contains(file.Path, error.Message);
        Assert.Contains("empty", error.Message);
    }

    [Fact]
    public void A_missing_file_is_refused_by_name_with_errno()
    {
        Platform.RequireLinux();
        string path = Path.Combine(Path.GetTempPath(), $"pe-missing-{Guid.NewGuid():N}.gguf");

        var error = Assert.Throws<FileNotFoundException>(() => FileMapping.Open(path));

        Assert.Contains(path, error.Message);
        Assert.Contains("ENOENT", error.Message);
        Assert.Equal(path, error.FileName);
    }

    [Fact]
    public void A_directory_is_refused()
    {
        Platform.RequireLinux();
        var error = Assert.Throws<InvalidDataException>(() => FileMapping.Open(Path.GetTempPath()));

        Assert.Contains("directory", error.Message);
    }

    [Fact]
    public void A_character_device_is_refused_as_not_a_regular_file()
    {
        Platform.RequireLinux();
        var error = Assert.Throws<InvalidDataException>(() => FileMapping.Open("/dev/zero"));

        Assert.Contains("/dev/zero", error.Message);
        Assert.Contains("character device", error.Message);
    }

    [Fact]
    public void A_fifo_is_refused_without_waiting_for_a_writer()
    {
        Platform.RequireLinux();
        string path = Path.Combine(Path.GetTempPath(), $"pe-fifo-{Guid.NewGuid():N}");
        Assert.Equal(0, MakeFifo(path, 0x180));
        try
        {
            var error = Assert.Throws<InvalidDataException>(() => FileMapping.Open(path));

            Assert.Contains("FIFO", error.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Read_after_dispose_throws_and_dispose_is_idempotent()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(100));
        var mapping = FileMapping.Open(file.Path);

        mapping.Dispose();
        mapping.Dispose();

        Assert.True(mapping.IsDisposed);
        var error = Assert.Throws<ObjectDisposedException>(() => mapping.Read(0, 1));
        Assert.Contains(mapping.SourcePath, error.Message);
    }

    [LibraryImport("libc", EntryPoint = "mkfifo", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MakeFifo(string path, int mode);
}

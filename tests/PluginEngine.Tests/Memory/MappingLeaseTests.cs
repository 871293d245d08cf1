using PluginEngine.Abstractions;
using PluginEngine.Core.Memory;
using Xunit;

namespace PluginEngine.Tests.Memory;

public class MappingLeaseTests
{
    [Fact]
    public void A_lease_makes_the_mapping_model_scoped_and_points_into_it()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(3 * 4096));
        using var mapping = FileMapping.Open(file.Path);
        Assert.Equal(MappingLifetime.LoadScoped, mapping.Lifetime);

        var lease = mapping.AcquireLease(4096, 8192, "cuda:0 import blk.0");

        Assert.Equal(MappingLifetime.ModelScoped, mapping.Lifetime);
        Assert.Equal(1, mapping.ActiveLeases);
        Assert.Same(mapping, lease.Mapping);
        Assert.Equal(mapping.BaseAddress + 4096, lease.HostAddress);
        Assert.Equal(4096, lease.Offset);
        Assert.Equal(8192, lease.Length);
        Assert.Equal("cuda:0 import blk.0", lease.Holder);
        Assert.False(lease.IsReleased);

        lease.Dispose();
        lease.Dispose();

        Assert.True(lease.IsReleased);
        Assert.Equal(0, mapping.ActiveLeases);
        Assert.Equal(MappingLifetime.ModelScoped, mapping.Lifetime);
    }

    [Fact]
    public void Dispose_with_a_held_lease_throws_naming_the_holder_and_keeps_the_pages()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(2 * 4096));
        var mapping = FileMapping.Open(file.Path);
        var gpuLease = mapping.AcquireLease(0, 4096, "hip:0 import token_embd");
        var clLease = mapping.AcquireLease(4096, 4096, "opencl:1 import output");

        var error = Assert.Throws<InvalidOperationException>(mapping.Dispose);

        Assert.Contains("hip:0 import token_embd", error.Message);
        Assert.Contains("opencl:1 import output", error.Message);
        Assert.Contains(mapping.SourcePath, error.Message);
        Assert.False(mapping.IsDisposed);
        Assert.Equal(file.Content, mapping.Read(0, file.Content.Length).ToArray());
        Assert.Equal(new[] { "hip:0 import token_embd", "opencl:1 import output" }, mapping.LeaseHolders);

        gpuLease.Dispose();
        var stillHeld = Assert.Throws<InvalidOperationException>(mapping.Dispose);
        Assert.DoesNotContain("hip:0", stillHeld.Message);
        Assert.Contains("opencl:1 import output", stillHeld.Message);

        clLease.Dispose();
        mapping.Dispose();

        Assert.True(mapping.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => mapping.Read(0, 1));
        Assert.Throws<ObjectDisposedException>(() => mapping.AcquireLease(0, 4096, "late"));
    }

    [Fact]
    public void Misaligned_leases_are_refused()
    {
        Platform.RequireLinux();
        using var mapping = AnonymousMapping.Create("/models/lease.gguf", 4 * 4096, hugePages: false);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => mapping.AcquireLease(100, 4096, "cuda:0"));

        Assert.Contains("page size", error.Message);
        Assert.Contains("cuda:0", error.Message);
        Assert.Equal(0, mapping.ActiveLeases);
        Assert.Equal(MappingLifetime.LoadScoped, mapping.Lifetime);
    }

    [Theory]
    [InlineData(0L, 0L)]
    [InlineData(0L, -4096L)]
    [InlineData(-4096L, 4096L)]
    [InlineData(4096L, 4 * 4096L)]
    [InlineData(4 * 4096L, 1L)]
    [InlineData(0L, long.MaxValue)]
    public void Out_of_range_leases_are_refused(long offset, long length)
    {
        Platform.RequireLinux();
        using var mapping = AnonymousMapping.Create("/models/lease.gguf", 4 * 4096, hugePages: false);

        Assert.Throws<ArgumentOutOfRangeException>(() => mapping.AcquireLease(offset, length, "cuda:0"));

        Assert.Equal(0, mapping.ActiveLeases);
        Assert.Equal(MappingLifetime.LoadScoped, mapping.Lifetime);
    }

    [Fact]
    public void A_lease_may_cover_the_last_partial_page_of_a_file_but_not_beyond()
    {
        Platform.RequireLinux();
        using var file = new TempModelFile(TempModelFile.Pattern(4096 + 10));
        using var mapping = FileMapping.Open(file.Path);

        using (var lease = mapping.AcquireLease(0, 2 * 4096, "whole pages"))
        {
            Assert.Equal(2 * 4096, mapping.MappedLength);
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => mapping.AcquireLease(0, 2 * 4096 + 1, "too far"));
    }

    [Fact]
    public void A_lease_needs_a_holder_name()
    {
        Platform.RequireLinux();
        using var mapping = AnonymousMapping.Create("/models/lease.gguf", 4096, hugePages: false);

        Assert.Throws<ArgumentException>(() => mapping.AcquireLease(0, 4096, " "));
    }

    [Fact]
    public void Concurrent_leases_and_releases_balance()
    {
        using var mapping = HeapMapping.Create("/models/lease.gguf", 64 * 4096);

        Parallel.For(0, 2000, i =>
        {
            var lease = mapping.AcquireLease(i % 64 * 4096, 4096, $"holder {i}");
            lease.Dispose();
            lease.Dispose();
        });

        Assert.Equal(0, mapping.ActiveLeases);
        Assert.Empty(mapping.LeaseHolders);
        Assert.Equal(MappingLifetime.ModelScoped, mapping.Lifetime);
    }
}

using System.Text;
using PluginEngine.Backends.Hip.Native;
using Xunit;

namespace PluginEngine.Backends.Gpu.Tests.Hip;

/// <summary>Reading the device's architecture name from either layout of hipDeviceProp_t, and what it implies.</summary>
public sealed class HipArchTests
{
    private static byte[] Props(int offset, string arch)
    {
        var props = new byte[8192];
        Encoding.ASCII.GetBytes("AMD Radeon Graphics").CopyTo(props, 0);
        Encoding.ASCII.GetBytes(arch).CopyTo(props, offset);
        return props;
    }

    [Fact]
    public void Rocm6_layout_is_read_at_its_offset()
        => Assert.Equal("gfx1151", HipArch.FromPropertiesR0600(Props(HipApi.GcnArchNameOffsetR0600, "gfx1151")));

    [Theory]
    [InlineData(396, "gfx90a:sramecc+:xnack-")]
    [InlineData(1160, "gfx1030")]
    public void Rocm5_layout_is_found_by_its_gfx_prefix(int offset, string arch)
        => Assert.Equal(arch, HipArch.FromPropertiesScan(Props(offset, arch)));

    [Fact]
    public void A_gfx_in_the_device_name_is_not_the_arch()
    {
        var props = new byte[2048];
        Encoding.ASCII.GetBytes("Radeon gfx900 board").CopyTo(props, 0);
        Assert.Equal("", HipArch.FromPropertiesScan(props));
        Encoding.ASCII.GetBytes("gfx906:sramecc-:xnack-").CopyTo(props, 700);
        Assert.Equal("gfx906:sramecc-:xnack-", HipArch.FromPropertiesScan(props));
    }

    [Theory]
    [InlineData("gfx90a:sramecc+:xnack-", 64)] // CDNA 2
    [InlineData("gfx942", 64)]                  // CDNA 3
    [InlineData("gfx906", 64)]                  // GCN 5
    [InlineData("gfx1030", 32)]                 // RDNA 2
    [InlineData("gfx1100", 32)]                 // RDNA 3
    [InlineData("gfx1151", 32)]                 // Strix Halo
    [InlineData("gfx1201", 32)]                 // RDNA 4
    public void Default_warp_follows_the_processor_family(string arch, int warp)
    {
        Assert.Equal(warp, HipArch.DefaultWarpSize(arch));
        Assert.Equal(arch.Split(':')[0], HipArch.Processor(arch));
    }
}

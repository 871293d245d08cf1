using PluginEngine.Abstractions;
using Xunit;
using static PluginEngine.Conformance.ConformanceBackends;

namespace PluginEngine.Conformance;

/// <summary>What every backend's device description and owned buffers must do, whatever their kernels.</summary>
public sealed class BufferContractTests
{
    [Theory]
    [MemberData(nameof(Candidates), MemberType = typeof(ConformanceBackends))]
    public void Device_description_is_complete(string backend)
    {
        var device = Require(backend);
        var d = device.Description;
        Assert.False(string.IsNullOrWhiteSpace(d.Name));
        Assert.False(string.IsNullOrWhiteSpace(d.StableId));
        Assert.True(d.TotalMemory > 0, $"{backend}: total memory {d.TotalMemory}");
        Assert.True(d.Has(BackendCapabilities.OwnedBuffers), $"{backend}: capabilities {d.Capabilities} lack OwnedBuffers");
        Assert.Same(d, device.Buffers.Device);
        Assert.True(device.Buffers.Alignment > 0 && (device.Buffers.Alignment & (device.Buffers.Alignment - 1)) == 0, $"alignment {device.Buffers.Alignment}");
        Assert.NotNull(device.CreateQueue());
    }

    public static TheoryData<string, GgmlType, int> SlideCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType, int>();
            foreach (string backend in Candidates)
            {
                data.Add(backend, GgmlType.Q4_0, 768);
                data.Add(backend, GgmlType.Q8_0, 96);
                data.Add(backend, GgmlType.Q4_K, 1280);
                data.Add(backend, GgmlType.Q6_K, 512);
                data.Add(backend, GgmlType.F32, 771);
            }
            return data;
        }
    }

    /// <summary>InitTensor of an owned buffer zeroes exactly [byteSize, allocSize) and leaves the tensor and its neighbours alone.</summary>
    [Theory]
    [MemberData(nameof(SlideCases))]
    public void InitTensor_zeroes_exactly_the_declared_slide(string backend, GgmlType type, int rowLength)
    {
        var device = Require(backend);
        var info = new TensorInfo("t", type, [rowLength, 3]);
        long alloc = device.Buffers.GetAllocSize(info);
        Assert.True(alloc >= info.ByteSize);
        TestContext.Current.TestOutputHelper?.WriteLine($"{backend}: {info} byte size {info.ByteSize}, alloc size {alloc}, slide {alloc - info.ByteSize}");
        const long offset = 128;
        using var buffer = device.Buffers.AllocateOwned("slide test", offset + alloc + 64);
        buffer.Memset(0, buffer.Size, 0xAB);
        buffer.InitTensor(info, offset, alloc);
        var bytes = new byte[buffer.Size];
        buffer.Download(0, bytes);
        for (long i = 0; i < bytes.Length; i++)
        {
            bool inSlide = i >= offset + info.ByteSize && i < offset + alloc;
            byte expected = inSlide ? (byte)0 : (byte)0xAB;
            if (bytes[i] != expected)
                Assert.Fail($"{backend}: byte {i} is 0x{bytes[i]:X2}, expected 0x{expected:X2} ({(inSlide ? "inside" : "outside")} the slide [{offset + info.ByteSize}, {offset + alloc}))");
        }
    }

    [Theory]
    [MemberData(nameof(Candidates), MemberType = typeof(ConformanceBackends))]
    public void Owned_buffer_upload_memset_copy_and_download_round_trip(string backend)
    {
        var device = Require(backend);
        using var a = device.Buffers.AllocateOwned("a", 1000);
        using var b = device.Buffers.AllocateOwned("b", 1000);
        var data = new byte[300];
        new Random(3).NextBytes(data);
        a.Memset(0, 1000, 7);
        a.Upload(101, data);
        b.Clear(1);
        b.CopyFrom(a, 101, 555, 300);
        var back = new byte[1000];
        b.Download(0, back);
        Assert.Equal(data, back[555..855]);
        Assert.All(back[..555], x => Assert.Equal(1, x));
        Assert.All(back[855..], x => Assert.Equal(1, x));
        a.Download(0, back);
        Assert.All(back[..101], x => Assert.Equal(7, x));
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Upload(900, data));
    }
}

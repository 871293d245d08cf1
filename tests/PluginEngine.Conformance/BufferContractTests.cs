using PluginEngine.Abstractions;
using Xunit;
using static PluginEngine.Conformance.ConformanceBackends;

namespace PluginEngine.Conformance;

/// <summary>What every backend's device description and owned buffers must do, whatever their kernels.</summary>
public abstract class BufferContractTests
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

    public static TheoryData<string, GgmlType> LoaderWrittenCases
    {
        get
        {
            var data = new TheoryData<string, GgmlType>();
            foreach (string backend in Candidates)
                foreach (var type in new[] { GgmlType.Q4_0, GgmlType.Q8_0, GgmlType.Q4_K })
                    data.Add(backend, type);
            return data;
        }
    }

    /// <summary>
    /// Weights written the way the loader writes them (InitTensor, then uploads in order from the tensor's start, here in
    /// chunks that split rows) may be kept by a backend in a layout of its own (CUDA had one for Q4_0/Q8_0 rows of a
    /// multiple of 256 in commit e6d07ee; docs/benchmarks.md says why it went). Whatever it keeps, the buffer's bytes read back as written, whole or from any offset; a rewrite of some rows,
    /// a copy into the tensor and a copy out of it see GGUF bytes; and matmuls over the rewritten tensor match the exact product.
    /// </summary>
    [Theory]
    [MemberData(nameof(LoaderWrittenCases))]
    public void Weights_written_like_the_loader_read_back_and_rewrite_as_written(string backend, GgmlType type)
    {
        var device = Require(backend);
        const int rows = 24, cols = 768;
        const long offset = 64;
        var info = new TensorInfo("w", type, [cols, rows]);
        long rowBytes = info.RowBytes, bytes = info.ByteSize, alloc = device.Buffers.GetAllocSize(info);
        byte[] expected = TestData.Matrix(type, 9, rows, cols);
        using var buffer = device.Buffers.AllocateOwned("loader-written", offset + alloc + 32);
        buffer.Memset(0, buffer.Size, 0xFF);
        buffer.InitTensor(info, offset, alloc);
        for (int done = 0; done < bytes; done += 1000)
            buffer.Upload(offset + done, expected.AsSpan(done, (int)Math.Min(1000, bytes - done)));

        void AssertReads(string what)
        {
            var whole = new byte[bytes];
            buffer.Download(offset, whole);
            Assert.True(expected.AsSpan().SequenceEqual(whole), $"{backend} {type}: {what}: the tensor does not read back as written");
            var part = new byte[777];
            buffer.Download(offset + 555, part); // from the middle of a row, over several rows
            Assert.True(expected.AsSpan(555, 777).SequenceEqual(part), $"{backend} {type}: {what}: bytes [555, 1332) do not read back as written");
            var tail = new byte[alloc - bytes + 100];
            buffer.Download(offset + bytes - 100, tail); // the last row's end and the zeroed slide
            Assert.True(expected.AsSpan((int)bytes - 100).SequenceEqual(tail.AsSpan(0, 100)), $"{backend} {type}: {what}: the last 100 bytes");
            Assert.All(tail[100..], b => Assert.Equal(0, b));
        }

        void AssertMultiplies(string what)
        {
            using var s = new DeviceSession(device);
            if (!s.Queue.Supports(ComputeOp.MatMul, type))
            {
                // Buffers hold any type; multiplying is asked only of the types the backend says it multiplies.
                TestContext.Current.TestOutputHelper?.WriteLine($"{backend} does not support MatMul for {type}: the read-back checks only");
                return;
            }
            var w = new DeviceTensor(buffer, offset, type);
            foreach (int tokens in new[] { 1, 40 })
            {
                float[] x = TestData.Random(tokens + 3, (long)tokens * cols);
                var y = s.Zeros((long)tokens * rows);
                s.Queue.MatMul(w, rows, cols, s.Floats(x), y, tokens);
                TestData.AssertClose(OpConformanceTests.ExactMatMul(type, expected, rows, cols, x, tokens), s.Read(y, (long)tokens * rows),
                    OpConformanceTests.MatMulTolerance(type), $"{backend} {type} {what}: MatMul x {tokens} tokens vs exact");
            }
        }

        AssertReads("uploaded in 1000-byte chunks");
        AssertMultiplies("uploaded in 1000-byte chunks");

        byte[] rewrite = TestData.Matrix(type, 10, 5, cols); // rows 5..9
        buffer.Upload(offset + 5 * rowBytes, rewrite);
        rewrite.CopyTo(expected, 5 * rowBytes);
        AssertReads("rows 5-9 rewritten");

        using var copy = device.Buffers.AllocateOwned("copy", bytes);
        copy.CopyFrom(buffer, offset, 0, bytes);
        var copied = new byte[bytes];
        copy.Download(0, copied);
        Assert.True(expected.AsSpan().SequenceEqual(copied), $"{backend} {type}: a copy out of the tensor differs from what was written");

        buffer.CopyFrom(copy, 0, offset + 20 * rowBytes, 3 * rowBytes); // rows 0..2 over rows 20..22
        Array.Copy(expected, 0, expected, 20 * rowBytes, 3 * rowBytes);
        AssertReads("rows 20-22 copied in");
        AssertMultiplies("rewritten and copied into");
    }
}

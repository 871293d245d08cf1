using PluginEngine.Abstractions;
using Xunit;

namespace PluginEngine.Tests;

public class GgmlTypeTableTests
{
    [Theory]
    [InlineData(GgmlType.Q4_0, 32, 18)]
    [InlineData(GgmlType.Q8_0, 32, 34)]
    [InlineData(GgmlType.Q4_K, 256, 144)]
    [InlineData(GgmlType.Q5_K, 256, 176)]
    [InlineData(GgmlType.Q6_K, 256, 210)]
    [InlineData(GgmlType.Q8_K, 256, 292)]
    [InlineData(GgmlType.F16, 1, 2)]
    [InlineData(GgmlType.BF16, 1, 2)]
    public void Block_layouts_match_gguf(GgmlType type, int block, int bytes)
    {
        var info = GgmlTypes.Get(type);
        Assert.Equal(block, info.BlockSize);
        Assert.Equal(bytes, info.BytesPerBlock);
    }

    [Fact]
    public void Slide_is_the_row_size_of_the_missing_elements()
    {
        var t = new TensorInfo("w", GgmlType.Q4_0, [4096 + 96, 8]);
        Assert.Equal(GgmlTypes.RowSize(GgmlType.Q4_0, 512 - 96), TensorPadding.SlideBytes(t, 512));
        Assert.Equal(0, TensorPadding.SlideBytes(new TensorInfo("f", GgmlType.F32, [100, 3]), 512));
    }
}

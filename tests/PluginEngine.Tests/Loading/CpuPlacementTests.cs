using PluginEngine.Abstractions;
using PluginEngine.Core.Loading;
using PluginEngine.Tests.Support;
using Xunit;

namespace PluginEngine.Tests.Loading;

public sealed class CpuPlacementTests
{
    [Fact]
    public void Cpu_reads_every_tensor_of_a_32_aligned_file_in_place()
    {
        // Offsets that are multiples of 32 but not of 64, as GGUF's default alignment produces.
        var layout = new ModelFileLayout("model.gguf", 4096,
        [
            new FileTensor(new TensorInfo("a", GgmlType.F32, [8]), 32),
            new FileTensor(new TensorInfo("b", GgmlType.Q8_0, [32, 3]), 96),
            new FileTensor(new TensorInfo("c", GgmlType.Q4_K, [256, 1]), 224),
        ]);
        var plan = PlacementPlanner.Plan(layout, _ => CpuTestBackend.Device, LoadOptions.Default, (_, _) => throw new InvalidOperationException("no gap should need reading"));
        Assert.All(plan.Tensors, t =>
        {
            Assert.Equal(PlacementKind.Imported, t.Kind);
            Assert.Equal(0, t.SlideBytes);
        });
    }
}

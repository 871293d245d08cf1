using PluginEngine.Abstractions;
using PluginEngine.Bench;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using PluginEngine.Tests.Loading;
using Xunit;

namespace PluginEngine.Tests.Bench;

/// <summary>The bench's memory columns per device, from a real load split over two devices.</summary>
public sealed class BenchDeviceMemoryTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pe-bench-memory-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Weights_and_context_are_counted_on_the_device_that_holds_them()
    {
        string path = Path.Combine(_dir, "m.gguf");
        SyntheticModel.Write(new SyntheticModelSpec
        {
            VocabularySize = 320, EmbeddingLength = 64, BlockCount = 2, HeadCount = 4, KvHeadCount = 2, FeedForwardLength = 128, ContextLength = 32,
        }, path);
        // Block 0 on a device that imports host pages (and does not read them in place: it registers them); the rest on
        // one that owns copies.
        var importer = new RecordingDevice("importer", DeviceKind.IntegratedGpu, hostImport: true);
        var owner = new RecordingDevice("owner", DeviceKind.DiscreteGpu, hostImport: false);
        var layout = LoadedModel.ToLayout(GgufReader.Read(path));
        var options = new LoadOptions(ModelMemoryMode.Anonymous, new HostImportSetting(HostImportMode.On, "test"));
        var plan = PlacementPlanner.Plan(layout, t => LlamaTensorNames.LayerOf(t.Name) == 0 ? importer : owner, options);

        using var loaded = new ModelLoader(new RecordingMappingFactory([])).Load(plan, TestContext.Current.CancellationToken);
        var row = new BenchResult();
        var weights = BenchSession.SetWeightBytes(row, loaded);
        var perDevice = BenchSession.DeviceMemoryOf(weights, new Dictionary<IBackendDevice, long> { [owner] = 1000, [importer] = 24 },
                                                    new Dictionary<IBackendDevice, long> { [owner] = 5000 });

        var byName = perDevice.ToDictionary(d => d.Device);
        Assert.Equal(["importer", "owner"], byName.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(0, byName["importer"].WeightsOwnedBytes);
        Assert.True(byName["importer"].WeightsImportedBytes > 0);
        Assert.Equal(0, byName["owner"].WeightsImportedBytes);
        Assert.True(byName["owner"].WeightsOwnedBytes > 0);
        Assert.Equal((1000L, 24L), (byName["owner"].ContextBytes, byName["importer"].ContextBytes));
        // device_used: the fall of free memory, on the devices where it was measured (here the owner only).
        Assert.Equal((5000L, 0L), (byName["owner"].DeviceUsedBytes, byName["importer"].DeviceUsedBytes));
        // The totals are the sums, and every imported byte was registered by a device that does not read in place.
        Assert.Equal(row.WeightsOwnedBytes, perDevice.Sum(d => d.WeightsOwnedBytes));
        Assert.Equal(row.WeightsImportedBytes, perDevice.Sum(d => d.WeightsImportedBytes));
        Assert.Equal(row.WeightsImportedBytes, row.HostRegisteredBytes);
        Assert.Equal(importer.ImportedBuffers.Sum(b => b.Size), row.WeightsImportedBytes);
    }
}

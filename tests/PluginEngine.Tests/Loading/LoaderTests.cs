using PluginEngine.Abstractions;
using PluginEngine.Core.Gguf;
using PluginEngine.Core.Inference;
using PluginEngine.Core.Loading;
using PluginEngine.Core.Models;
using Xunit;

namespace PluginEngine.Tests.Loading;

/// <summary>
/// The seed regression at contract level and the loader's placement rules: a quantized model whose rows need slides
/// (ne0 % 512 != 0), loaded from a read-only file mapping with host import forced on, through a backend that imports
/// host pages and records every write it is asked to make.
/// </summary>
public sealed class LoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pe-loader-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>768- and 1280-wide rows: 768 % 512 = 256 and 1280 % 512 = 256, so every quantized matrix needs a slide.</summary>
    private string WriteModel(SyntheticWeightType type = SyntheticWeightType.Q4_0, uint alignment = 32, byte padding = 0, string name = "m.gguf")
    {
        string path = Path.Combine(_dir, name);
        SyntheticModel.Write(new SyntheticModelSpec
        {
            VocabularySize = 520, EmbeddingLength = 768, BlockCount = 2, HeadCount = 12, KvHeadCount = 4, FeedForwardLength = 1280,
            ContextLength = 256, WeightType = type, Alignment = alignment, PaddingByte = padding,
        }, path);
        return path;
    }

    private static (PlacementPlan Plan, ModelFileLayout Layout) Plan(string path, IBackendDevice device, ModelMemoryMode memory, HostImportMode import)
    {
        var layout = LoadedModel.ToLayout(GgufReader.Read(path));
        var options = new LoadOptions(memory, new HostImportSetting(import, "test"));
        return (PlacementPlanner.Plan(layout, _ => device, options), layout);
    }

    [Fact]
    public void Seed_regression_read_only_file_mapping_with_import_forced_on_never_writes_imported_memory()
    {
        string path = WriteModel();
        byte[] before = File.ReadAllBytes(path);
        var device = new RecordingDevice();
        var mappings = new RecordingMappingFactory(device.Events);
        var (plan, _) = Plan(path, device, ModelMemoryMode.FileMapping, HostImportMode.On);

        using (var loaded = new ModelLoader(mappings).Load(plan, TestContext.Current.CancellationToken))
        {
            // The backend was never asked to write imported memory.
            Assert.DoesNotContain(device.Writes, w => w.Ownership == BufferOwnership.Imported);
            Assert.NotEmpty(device.ImportedBuffers);

            var quantized = loaded.FinalPlacements.Where(p => p.Tensor.TypeInfo.IsQuantized).ToList();
            Assert.NotEmpty(quantized);
            foreach (var p in quantized)
            {
                // Every quantized matrix needs a slide larger than GGUF's 31-byte gap: it must not be imported.
                Assert.True(p.SlideBytes > 31, $"{p.Tensor.Name} slide {p.SlideBytes}");
                Assert.Equal(PlacementKind.Copied, p.Kind);
                Assert.Contains("does not fit", p.Reason);
            }

            foreach (var p in loaded.FinalPlacements)
            {
                var binding = loaded.Get(p.Tensor.Name);
                var bytes = new byte[p.AllocSize];
                binding.Buffer.Download(binding.BufferOffset, bytes);
                // Tensor bytes arrived intact, and every slide reads zero on the device.
                Assert.True(bytes.AsSpan(0, (int)p.Tensor.ByteSize).SequenceEqual(before.AsSpan((int)p.FileOffset, (int)p.Tensor.ByteSize)), p.Tensor.Name);
                Assert.True(bytes.AsSpan((int)p.Tensor.ByteSize).IndexOfAnyExcept((byte)0) < 0, $"slide of {p.Tensor.Name} is not zero");
                if (p.Kind == PlacementKind.Imported)
                {
                    Assert.Equal(BufferOwnership.Imported, binding.Buffer.Ownership);
                    Assert.Equal(0, p.SlideBytes);
                    Assert.InRange(binding.BufferOffset + p.AllocSize, 1, binding.Buffer.Size);
                }
                else
                {
                    // Owned slides were zeroed by the backend's init (the buffer started as 0xCD garbage): one memset per slide.
                    Assert.Equal(BufferOwnership.Owned, binding.Buffer.Ownership);
                    if (p.SlideBytes > 0)
                        Assert.Contains(device.Writes, w => w.Op == "memset" && w.Offset == binding.BufferOffset + p.Tensor.ByteSize && w.Length == p.SlideBytes);
                }
            }
            Assert.Equal(MappingLifetime.ModelScoped, loaded.Mapping!.Lifetime);
        }
        // The neighbours' bytes, and the whole file, are unchanged.
        Assert.Equal(before, File.ReadAllBytes(path));
    }

    [Fact]
    public void Slides_that_fit_in_zero_gaps_are_imported_in_place()
    {
        string path = WriteModel(alignment: 8192, padding: 0);
        var device = new RecordingDevice();
        var (plan, _) = Plan(path, device, ModelMemoryMode.FileMapping, HostImportMode.On);
        Assert.All(plan.Tensors, p => Assert.Equal(PlacementKind.Imported, p.Kind));

        using var loaded = new ModelLoader(new RecordingMappingFactory(device.Events)).Load(plan, TestContext.Current.CancellationToken);
        Assert.Empty(device.Writes);
        foreach (var p in loaded.FinalPlacements.Where(p => p.SlideBytes > 0))
        {
            var b = loaded.Get(p.Tensor.Name);
            var slide = new byte[p.SlideBytes];
            b.Buffer.Download(b.BufferOffset + p.Tensor.ByteSize, slide);
            Assert.True(slide.AsSpan().IndexOfAnyExcept((byte)0) < 0);
            // The device address is the runtime's, not the host's, and lies inside the imported range.
            Assert.NotEqual(b.Buffer.ImportLease!.HostAddress + (nint)b.BufferOffset, b.DeviceAddress);
            Assert.InRange(b.BufferOffset, 0, b.Buffer.Size - p.AllocSize);
        }
        foreach (var r in plan.Imports)
        {
            Assert.Equal(0, r.Offset % Environment.SystemPageSize);
            Assert.True(r.End % Environment.SystemPageSize == 0 || r.End == plan.MappingLength);
        }
    }

    [Fact]
    public void Slides_that_fit_but_whose_gap_is_dirty_get_owned_copies()
    {
        string path = WriteModel(alignment: 8192, padding: 0xAB);
        var device = new RecordingDevice();
        var (plan, _) = Plan(path, device, ModelMemoryMode.FileMapping, HostImportMode.On);
        var quantized = plan.Tensors.Where(p => p.SlideBytes > 0).ToList();
        Assert.NotEmpty(quantized);
        Assert.All(quantized, p =>
        {
            Assert.Equal(PlacementKind.Copied, p.Kind);
            Assert.Contains("is not zero", p.Reason);
        });
        Assert.Contains("copied", plan.Format());
    }

    [Theory]
    [InlineData(ModelMemoryMode.Anonymous)]
    [InlineData(ModelMemoryMode.Heap)]
    public void Loader_layouts_reserve_every_slide_and_import_everything(ModelMemoryMode memory)
    {
        string path = WriteModel(padding: 0xAB);
        var device = new RecordingDevice();
        var mappings = new RecordingMappingFactory(device.Events);
        var (plan, _) = Plan(path, device, memory, HostImportMode.On);
        Assert.All(plan.Tensors, p => Assert.Equal(PlacementKind.Imported, p.Kind));

        using var loaded = new ModelLoader(mappings).Load(plan, TestContext.Current.CancellationToken);
        Assert.Empty(device.Writes);
        Assert.True(loaded.Mapping!.IsSealed);
        Assert.False(loaded.Mapping.CanWrite);
        Assert.Throws<MappingWriteRefusedException>(() => { using var w = loaded.Mapping.OpenWrite(0, 1); });
        byte[] file = File.ReadAllBytes(path);
        foreach (var p in loaded.FinalPlacements)
        {
            var b = loaded.Get(p.Tensor.Name);
            var bytes = new byte[p.AllocSize];
            b.Buffer.Download(b.BufferOffset, bytes);
            Assert.True(bytes.AsSpan(0, (int)p.Tensor.ByteSize).SequenceEqual(file.AsSpan((int)p.FileOffset, (int)p.Tensor.ByteSize)));
            Assert.True(bytes.AsSpan((int)p.Tensor.ByteSize).IndexOfAnyExcept((byte)0) < 0, $"slide of {p.Tensor.Name}");
        }
    }

    [Fact]
    public void Refused_import_falls_back_to_owned_copies_and_says_why()
    {
        string path = WriteModel(alignment: 8192);
        var device = new RecordingDevice { RefuseImports = "registration refused: too large" };
        var (plan, _) = Plan(path, device, ModelMemoryMode.FileMapping, HostImportMode.On);
        using var loaded = new ModelLoader(new RecordingMappingFactory(device.Events)).Load(plan, TestContext.Current.CancellationToken);
        Assert.All(loaded.FinalPlacements, p => Assert.Equal(PlacementKind.Copied, p.Kind));
        Assert.All(loaded.FinalPlacements, p => Assert.Contains("too large", p.Reason));
        Assert.Contains(loaded.Log, l => l.Contains("import refused") && l.Contains("too large"));
        Assert.Null(loaded.Mapping); // nothing imports it any more: released after loading
        Assert.Equal(1, loaded.Statistics.ImportFallbacks);
    }

    [Fact]
    public void Failed_load_tears_down_imports_before_unmapping()
    {
        string path = WriteModel();
        var device = new RecordingDevice { FailOwnedAllocation = true };
        var mappings = new RecordingMappingFactory(device.Events);
        var (plan, _) = Plan(path, device, ModelMemoryMode.FileMapping, HostImportMode.On);
        Assert.Throws<OutOfMemoryException>(() => new ModelLoader(mappings).Load(plan, TestContext.Current.CancellationToken));

        var mapping = Assert.Single(mappings.Created);
        Assert.True(((RecordingMapping)mapping).Disposed);
        Assert.Equal(0, mapping.ActiveLeases);
        AssertReleasedBeforeUnmap(device.Events);
    }

    [Fact]
    public void Cancelled_load_tears_down_in_order()
    {
        string path = WriteModel(alignment: 8192);
        var device = new RecordingDevice();
        var mappings = new RecordingMappingFactory(device.Events);
        var (plan, _) = Plan(path, device, ModelMemoryMode.Anonymous, HostImportMode.On);
        using var cts = new CancellationTokenSource();
        device.OnImport = cts.Cancel; // cancelled midway: right after the first import
        Assert.ThrowsAny<OperationCanceledException>(() => new ModelLoader(mappings).Load(plan, cts.Token));
        Assert.True(((RecordingMapping)mappings.Created.Single()).Disposed);
        AssertReleasedBeforeUnmap(device.Events);
    }

    [Fact]
    public void Dispose_releases_imports_then_unmaps()
    {
        string path = WriteModel(alignment: 8192);
        var device = new RecordingDevice();
        var mappings = new RecordingMappingFactory(device.Events);
        var (plan, _) = Plan(path, device, ModelMemoryMode.FileMapping, HostImportMode.On);
        var loaded = new ModelLoader(mappings).Load(plan, TestContext.Current.CancellationToken);
        Assert.True(loaded.Mapping!.ActiveLeases > 0);
        loaded.Dispose();
        AssertReleasedBeforeUnmap(device.Events);
        Assert.Equal("unmap", device.Events[^1]);
    }

    private static void AssertReleasedBeforeUnmap(List<string> events)
    {
        int unmap = events.IndexOf("unmap");
        Assert.True(unmap >= 0, "mapping was not unmapped: " + string.Join(" | ", events));
        int lastImportRelease = events.FindLastIndex(e => e.StartsWith("release") && e.Contains("import") || e.StartsWith("lease released"));
        Assert.True(events.Any(e => e.StartsWith("import")), "nothing was imported: " + string.Join(" | ", events));
        Assert.True(lastImportRelease >= 0 && lastImportRelease < unmap, "order: " + string.Join(" | ", events));
        // For each import: the device released it (unregister) before its lease was released.
        foreach (var import in events.Where(e => e.StartsWith("import ")).Select(e => e["import ".Length..]))
            Assert.True(events.IndexOf($"release {import}") < events.IndexOf($"lease released {import}"), "unregister before lease release: " + import);
    }
}

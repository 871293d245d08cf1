using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Loading;

/// <summary>
/// Carries out a <see cref="PlacementPlan"/>: creates the host mapping, fills loader layouts (zeroing slides there
/// when the pages are not known to be zero — the only place padding is ever written by the host), seals it, imports
/// ranges (falling back to owned copies when a device refuses), allocates owned buffers, lets the backend zero
/// their slides (<see cref="BackendBuffer.InitTensor"/>) and uploads. On any failure or cancellation everything
/// created so far is torn down in order: buffers (unregister) → mapping (unmap → close).
/// </summary>
public sealed class ModelLoader(IMappingFactory mappings, ILogger? logger = null)
{
    /// <summary>Upload chunk: bounds the size of a single span handed to a backend.</summary>
    private const int UploadChunkBytes = 64 << 20;

    private readonly ILogger _logger = logger ?? NullLogger.Instance;

    /// <summary>Loads the planned tensors.</summary>
    public LoadedWeights Load(PlacementPlan plan, CancellationToken cancellation = default)
    {
        var clock = Stopwatch.StartNew();
        var log = new List<string>();
        void Note(string message)
        {
            log.Add(message);
            _logger.LogInformation("{Message}", message);
        }

        var buffers = new List<BackendBuffer>();
        IModelMapping? mapping = null;
        try
        {
            mapping = CreateMapping(plan, Note);
            long readIntoMapping = plan.UsesLoaderLayout ? FillLoaderLayout(plan, mapping, Note, cancellation) : 0;

            var final = plan.Tensors.ToDictionary(t => t.Tensor.Name);
            var bindings = new Dictionary<string, TensorBinding>(plan.Tensors.Count);
            long imported = 0;
            int fallbacks = 0;

            foreach (var range in plan.Imports)
            {
                cancellation.ThrowIfCancellationRequested();
                var device = range.Device;
                string name = $"{device.Description.Backend} import [{range.Offset}, {range.End})";
                var lease = mapping.AcquireLease(range.Offset, range.Length, name);
                HostImportResult result;
                try { result = device.Buffers.TryImportHost(name, lease); }
                catch (Exception e) when (e is not OperationCanceledException) { result = HostImportResult.Refused($"{e.GetType().Name}: {e.Message}"); }
                if (!result.Succeeded)
                {
                    lease.Dispose();
                    fallbacks++;
                    Note($"{name}: import refused ({result.RefusalReason}); falling back to owned copies for its {range.Tensors.Count} tensors");
                    foreach (var t in range.Tensors)
                        final[t.Tensor.Name] = t with { Kind = PlacementKind.Copied, Reason = $"copied: import of its range was refused ({result.RefusalReason})" };
                    continue;
                }
                var buffer = result.Buffer!;
                buffers.Add(buffer);
                if (buffer.Ownership != BufferOwnership.Imported || buffer.Size != range.Length)
                    throw new InvalidOperationException($"{device.Description.Backend}: TryImportHost returned a {buffer.Ownership} buffer of {buffer.Size} B for a {range.Length} B import");
                foreach (var t in range.Tensors)
                {
                    // Each bound tensor, slide included, must lie inside the registered range.
                    long offset = t.MappingOffset - range.Offset;
                    if (offset < 0 || offset + t.AllocSize > range.Length)
                        throw new InvalidOperationException($"tensor '{t.Tensor.Name}' [{t.MappingOffset}, {t.MappingOffset + t.AllocSize}) is outside import range [{range.Offset}, {range.End})");
                    bindings[t.Tensor.Name] = new TensorBinding(t, buffer, offset);
                }
                imported += range.Length;
                Note($"{name}: imported {range.Length:N0} B, {range.Tensors.Count} tensors, device address 0x{buffer.DeviceAddress:x}");
            }

            long uploaded = 0;
            foreach (var group in final.Values.Where(t => t.Kind != PlacementKind.Imported).GroupBy(t => t.Device))
            {
                var device = group.Key;
                long align = device.Buffers.Alignment;
                var members = group.OrderBy(t => t.MappingOffset).ToList();
                long total = members.Sum(t => TensorPadding.AlignUp(t.AllocSize, align));
                var buffer = device.Buffers.AllocateOwned($"{device.Description.Backend} weights", total);
                buffers.Add(buffer);
                if (buffer.Ownership != BufferOwnership.Owned)
                    throw new InvalidOperationException($"{device.Description.Backend}: AllocateOwned returned an imported buffer");
                long offset = 0;
                foreach (var t in members)
                {
                    cancellation.ThrowIfCancellationRequested();
                    buffer.InitTensor(t.Tensor, offset, t.AllocSize);
                    for (long done = 0; done < t.Tensor.ByteSize;)
                    {
                        int n = (int)Math.Min(UploadChunkBytes, t.Tensor.ByteSize - done);
                        buffer.Upload(offset + done, mapping.Read(t.MappingOffset + done, n));
                        done += n;
                    }
                    bindings[t.Tensor.Name] = new TensorBinding(t, buffer, offset);
                    uploaded += t.Tensor.ByteSize;
                    offset += TensorPadding.AlignUp(t.AllocSize, align);
                }
                int copied = members.Count(t => t.Kind == PlacementKind.Copied);
                Note($"{device.Description.Backend}: owned buffer of {total:N0} B, {members.Count} tensors uploaded ({copied} copied instead of imported)");
            }

            cancellation.ThrowIfCancellationRequested(); // a cancelled load never returns, even if the work happened to finish
            if (mapping.ActiveLeases == 0)
            {
                Note($"mapping of {plan.File.Path} released after loading (load-scoped: every tensor was copied out)");
                mapping.Dispose();
                mapping = null;
            }
            else
            {
                Note($"mapping of {plan.File.Path} kept for the model's lifetime ({mapping.Backing}, {mapping.ActiveLeases} imports hold leases)");
            }

            var finalList = plan.Tensors.Select(t => final[t.Tensor.Name]).ToArray();
            var stats = new LoadStatistics(uploaded, imported, readIntoMapping, fallbacks, clock.Elapsed);
            return new LoadedWeights(plan, finalList, bindings, buffers, mapping, stats, log);
        }
        catch
        {
            Teardown(buffers, ref mapping);
            throw;
        }
    }

    /// <summary>The one teardown order: buffers in reverse creation order (imports unregister and release leases), then the mapping.</summary>
    internal static void Teardown(List<BackendBuffer> buffers, ref IModelMapping? mapping)
    {
        List<Exception>? errors = null;
        for (int i = buffers.Count - 1; i >= 0; i--)
        {
            try { buffers[i].Dispose(); }
            catch (Exception e) { (errors ??= []).Add(e); }
        }
        buffers.Clear();
        try { mapping?.Dispose(); }
        catch (Exception e) { (errors ??= []).Add(e); }
        mapping = null;
        if (errors is not null) throw new AggregateException("errors while releasing model memory", errors);
    }

    private IModelMapping CreateMapping(PlacementPlan plan, Action<string> note)
    {
        string path = plan.File.Path;
        IModelMapping m = plan.Options.Memory switch
        {
            ModelMemoryMode.FileMapping => mappings.MapFile(path),
            ModelMemoryMode.HugePages => mappings.CreateAnonymous(path, plan.MappingLength, hugePages: true),
            ModelMemoryMode.Anonymous => mappings.CreateAnonymous(path, plan.MappingLength, hugePages: false),
            ModelMemoryMode.Heap => mappings.CreateHeap(path, plan.MappingLength),
            _ => throw new ArgumentOutOfRangeException(nameof(plan)),
        };
        note($"mapped {path}: {m.Backing}, {m.Writability}, {m.Length:N0} B, page {m.PageSize} B, known-zero {m.KnownZero}");
        return m;
    }

    /// <summary>Reads every tensor into the loader's layout, zeroes slides unless the pages are known zero, then seals.</summary>
    private long FillLoaderLayout(PlacementPlan plan, IModelMapping mapping, Action<string> note, CancellationToken cancellation)
    {
        long total = 0;
        using var file = File.OpenHandle(plan.File.Path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.SequentialScan);
        foreach (var t in plan.Tensors)
        {
            cancellation.ThrowIfCancellationRequested();
            mappings.CopyFromFile(mapping, file, t.FileOffset, t.MappingOffset, t.Tensor.ByteSize, cancellation);
            total += t.Tensor.ByteSize;
            if (t.SlideBytes > 0 && !mapping.KnownZero)
            {
                using var window = mapping.OpenWrite(t.MappingOffset + t.Tensor.ByteSize, checked((int)t.SlideBytes));
                window.Bytes.Clear();
            }
        }
        if (mapping.Writability != MappingWritability.ReadOnly)
        {
            mapping.Seal();
            note($"mapping sealed read-only after reading {total:N0} B");
        }
        return total;
    }
}

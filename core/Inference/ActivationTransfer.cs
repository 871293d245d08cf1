using PluginEngine.Abstractions;
using PluginEngine.Core.Plugins;

namespace PluginEngine.Core.Inference;

/// <summary>
/// Copies activations between two devices' queues (docs/multi-gpu.md#transfers): through the source plugin's
/// <see cref="IComputeQueue.CopyTo"/> when it is an API 1.2 plugin that can reach the destination (a peer copy between two
/// GPUs of one plugin), else through host staging (download, then upload), which every pair of devices supports.
/// </summary>
internal static class ActivationTransfer
{
    public static void Copy(IComputeQueue from, DeviceTensor src, IComputeQueue to, DeviceTensor dst, long count, float[] staging, TransferCounters counters)
    {
        long bytes = count * sizeof(float);
        bool direct = from.Device != to.Device
                      && PluginApiVersions.MinorOf(from.Device) >= PluginApiVersions.CopyToSince
                      && from.CopyTo(src, to, dst, bytes);
        if (!direct)
        {
            var host = staging.AsSpan(0, checked((int)count));
            from.Download(src, host);
            to.Upload(host, dst);
        }
        counters.Record(from.Device, to.Device, bytes, direct);
    }
}

/// <summary>Per device pair: copies, bytes and how many went device to device.</summary>
public sealed record PairTransfers(long Copies, long Bytes, long DirectCopies);

public sealed partial class TransferCounters
{
    private readonly Dictionary<(IBackendDevice From, IBackendDevice To), PairTransfers> _pairs = [];

    /// <summary>Copies that went device to device (<see cref="IComputeQueue.CopyTo"/>) rather than through host memory.</summary>
    public long DirectCopies { get; private set; }

    /// <summary>Copies and bytes per (source, destination) device pair.</summary>
    public IReadOnlyDictionary<(IBackendDevice From, IBackendDevice To), PairTransfers> Pairs => _pairs;

    internal void Record(IBackendDevice from, IBackendDevice to, long bytes, bool direct)
    {
        Copies++;
        Bytes += bytes;
        if (direct) DirectCopies++;
        var p = _pairs.GetValueOrDefault((from, to), new PairTransfers(0, 0, 0));
        _pairs[(from, to)] = new PairTransfers(p.Copies + 1, p.Bytes + bytes, p.DirectCopies + (direct ? 1 : 0));
    }

    /// <summary>"cuda:0→cuda:1 64 copies, 262,144 B (64 direct); …", one entry per pair in first-copy order; empty when none.</summary>
    public string DescribePairs()
        => string.Join("; ", _pairs.Select(kv => $"{Name(kv.Key.From)}→{Name(kv.Key.To)} {kv.Value.Copies} copies, {kv.Value.Bytes:N0} B" +
                                                 (kv.Value.DirectCopies > 0 ? $" ({kv.Value.DirectCopies} device to device)" : "")));

    private static string Name(IBackendDevice d) => Loading.LayerSplitPlanner.Id(d);
}

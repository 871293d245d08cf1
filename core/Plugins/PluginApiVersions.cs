using System.Runtime.CompilerServices;
using PluginEngine.Abstractions;

namespace PluginEngine.Core.Plugins;

/// <summary>
/// The plugin API minor version negotiated for each device the <see cref="PluginHost"/> loaded, so the core calls only the
/// members that minor has (see <see cref="PluginApi"/>'s history) without reflection. A device created in-process (tests, a
/// backend referenced directly) was compiled against this contracts assembly and counts as <see cref="PluginApi.Minor"/>.
/// </summary>
public static class PluginApiVersions
{
    private static readonly ConditionalWeakTable<IBackendDevice, StrongBox<int>> Minors = new();

    /// <summary>Records the minor version of <paramref name="device"/>'s plugin.</summary>
    public static void Record(IBackendDevice device, int minor) => Minors.AddOrUpdate(device, new StrongBox<int>(minor));

    /// <summary>The API minor version <paramref name="device"/>'s plugin was compiled against.</summary>
    public static int MinorOf(IBackendDevice device) => Minors.TryGetValue(device, out var box) ? box.Value : PluginApi.Minor;

    /// <summary>First minor version with <see cref="IComputeQueue.RopeWithFactors"/>.</summary>
    public const int RopeWithFactorsSince = 1;

    /// <summary>First minor version with <see cref="IComputeQueue.CopyTo"/>.</summary>
    public const int CopyToSince = 2;

    /// <summary>First minor version with <see cref="IComputeQueue.MatMulRopeAndStoreKv"/>.</summary>
    public const int MatMulRopeAndStoreKvSince = 3;
}

using PluginEngine.Abstractions;

namespace PluginEngine.Core.Loading;

/// <summary>
/// The host-import policy (docs/architecture.md#host-import-policy): whether a device uses a mapping's pages in place.
/// </summary>
public static class HostImportPolicy
{
    /// <summary>Decides for one device; the reason is what the plan and the log print.</summary>
    public static (bool Import, string Reason) Decide(DeviceDescription device, ModelMemoryMode memory, HostImportSetting setting)
    {
        if (device.Has(BackendCapabilities.HostMemoryInPlace))
            return (true, $"{device.Backend} reads host memory in place (independent of the host-import switch)");
        if (!device.Has(BackendCapabilities.HostImport))
            return (false, $"{device.Backend} does not declare the HostImport capability");
        switch (setting.Mode)
        {
            case HostImportMode.Off:
                return (false, $"host import off ({setting.Source})");
            case HostImportMode.On:
                return device.Kind == DeviceKind.IntegratedGpu
                    ? (true, $"host import forced on ({setting.Source})")
                    : (true, $"host import forced on ({setting.Source}) for a {device.Kind} device: experimental, device reads go over the bus");
            default:
                if (memory != ModelMemoryMode.HugePages)
                    return (false, "host import auto: off because hugepages are off");
                if (device.Kind != DeviceKind.IntegratedGpu)
                    return (false, $"host import auto: off for a {device.Kind} device (auto imports only on integrated, unified-memory devices)");
                return (true, "host import auto: on (hugepages on, integrated device)");
        }
    }
}

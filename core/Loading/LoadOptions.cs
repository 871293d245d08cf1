using PluginEngine.Abstractions;

namespace PluginEngine.Core.Loading;

/// <summary>Where the model file's bytes are held in host memory while (and after) loading.</summary>
public enum ModelMemoryMode
{
    /// <summary>mmap of the file itself (read-only); the default.</summary>
    FileMapping,
    /// <summary>Anonymous 2 MiB huge pages (hugetlbfs pool), laid out by the loader with every slide reserved.</summary>
    HugePages,
    /// <summary>Anonymous normal pages (transparent huge pages requested), laid out by the loader.</summary>
    Anonymous,
    /// <summary>No mmap: the file is read into heap memory laid out by the loader.</summary>
    Heap,
}

/// <summary>The GPU host-import switch: auto (the default policy), forced on, or off.</summary>
public enum HostImportMode { Auto, On, Off }

/// <summary>The host-import switch together with where its value came from, for the log.</summary>
/// <param name="Mode">Effective mode.</param>
/// <param name="Source">"default", "flag", or "environment PLUGINENGINE_GPU_HOST_IMPORT".</param>
/// <param name="Note">A conflict between flag and environment, when there was one.</param>
public sealed record HostImportSetting(HostImportMode Mode, string Source, string? Note = null)
{
    /// <summary>Name of the environment variable that sets the mode (on|off|auto).</summary>
    public const string EnvironmentVariable = "PLUGINENGINE_GPU_HOST_IMPORT";

    /// <summary>The default: auto.</summary>
    public static HostImportSetting Default { get; } = new(HostImportMode.Auto, "default");

    /// <summary>
    /// Resolves the mode from a command-line flag (null when not given) and the environment value (null when unset).
    /// The flag wins; a disagreement is reported in <see cref="Note"/>. A bad environment value is an error naming the variable.
    /// </summary>
    public static HostImportSetting Resolve(HostImportMode? flag, string? environmentValue)
    {
        HostImportMode? env = null;
        if (!string.IsNullOrWhiteSpace(environmentValue))
        {
            env = environmentValue.Trim().ToLowerInvariant() switch
            {
                "on" or "1" or "true" => HostImportMode.On,
                "off" or "0" or "false" => HostImportMode.Off,
                "auto" => HostImportMode.Auto,
                _ => throw new ArgumentException($"{EnvironmentVariable}='{environmentValue}': expected on, off or auto"),
            };
        }
        if (flag is { } f)
        {
            string? note = env is { } e && e != f ? $"command-line flag ({f}) overrides {EnvironmentVariable}={environmentValue}" : null;
            return new HostImportSetting(f, "flag", note);
        }
        return env is { } v ? new HostImportSetting(v, $"environment {EnvironmentVariable}") : Default;
    }
}

/// <summary>Everything that decides how a model's weights are placed.</summary>
/// <param name="Memory">How the file's bytes are held in host memory.</param>
/// <param name="HostImport">The GPU host-import switch.</param>
public sealed record LoadOptions(ModelMemoryMode Memory, HostImportSetting HostImport)
{
    /// <summary>File mapping, import auto.</summary>
    public static LoadOptions Default { get; } = new(ModelMemoryMode.FileMapping, HostImportSetting.Default);

    /// <summary>
    /// Builds options from the user-facing switches, rejecting impossible combinations with a message that says why:
    /// <c>--hugepages</c> with <c>--no-mmap</c>, and <c>--hugepages</c> off Linux.
    /// </summary>
    public static LoadOptions FromSwitches(bool useMmap, bool hugePages, HostImportSetting hostImport, bool isLinux)
    {
        if (hugePages && !useMmap)
            throw new LoadOptionsException("--hugepages cannot be combined with --no-mmap: huge pages are an anonymous mmap; drop one of the two");
        if (hugePages && !isLinux)
            throw new LoadOptionsException("--hugepages is only supported on Linux (it needs MAP_HUGETLB and the hugetlbfs pool)");
        var memory = hugePages ? ModelMemoryMode.HugePages : useMmap ? ModelMemoryMode.FileMapping : ModelMemoryMode.Heap;
        return new LoadOptions(memory, hostImport);
    }
}

/// <summary>The requested load options are contradictory or unsupported here.</summary>
public sealed class LoadOptionsException(string message) : Exception(message);

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

using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;
using PluginEngine.Backends.Gpu.Kernels;

namespace PluginEngine.Backends.Gpu;

/// <summary>
/// Which GPUs a plugin exposes (docs/multi-gpu.md#flags): <c>device</c> (one ordinal) or <c>devices</c> ("all", the default,
/// or ordinals "0,2"), and <c>virtual_devices</c> N (1 to 8, default 1): each GPU shown as N devices with their own context,
/// streams and kernel module, so a split over several devices runs on one GPU (for testing:
/// docs/multi-gpu.md#two-devices-on-one-gpu). Environment overrides: PLUGINENGINE_&lt;BACKEND&gt;_DEVICES and
/// PLUGINENGINE_&lt;BACKEND&gt;_VIRTUAL_DEVICES.
/// </summary>
/// <param name="Ordinals">The ordinals asked for; null: every device the runtime reports.</param>
/// <param name="VirtualDevices">Devices per GPU.</param>
internal sealed record GpuDeviceSelection(IReadOnlyList<int>? Ordinals, int VirtualDevices)
{
    public const int MaxVirtualDevices = 8;

    /// <summary>Reads the options; a bad value throws <see cref="PluginOptionException"/> naming where it came from.</summary>
    public static GpuDeviceSelection Read(PluginOptions options, Func<string, string?> environment, string backend)
    {
        string prefix = $"PLUGINENGINE_{backend.ToUpperInvariant()}_";
        // Every key is read, whichever wins, so the host never reports one as unknown.
        string? single = options.GetString("device");
        string? list = options.GetString("devices");
        string? virtualFromFile = options.GetString("virtual_devices");
        if (single is not null && list is not null)
            throw new PluginOptionException($"{options.JsonPath}: give 'device' or 'devices', not both");

        IReadOnlyList<int>? ordinals = null;
        if (environment(prefix + "DEVICES") is { Length: > 0 } fromEnv) ordinals = ParseOrdinals(fromEnv, $"environment variable {prefix}DEVICES");
        else if (single is not null) ordinals = [ParseOrdinal(single, $"{options.JsonPath}.device")];
        else if (list is not null) ordinals = ParseOrdinals(list, $"{options.JsonPath}.devices");

        int virtualDevices = 1;
        if (environment(prefix + "VIRTUAL_DEVICES") is { Length: > 0 } v) virtualDevices = ParseVirtual(v, $"environment variable {prefix}VIRTUAL_DEVICES");
        else if (virtualFromFile is not null) virtualDevices = ParseVirtual(virtualFromFile, $"{options.JsonPath}.virtual_devices");
        return new GpuDeviceSelection(ordinals, virtualDevices);
    }

    private static IReadOnlyList<int>? ParseOrdinals(string text, string where)
    {
        if (text.Trim().Equals("all", StringComparison.OrdinalIgnoreCase)) return null;
        var ordinals = text.Split(',').Select(item => ParseOrdinal(item, where)).ToArray();
        if (ordinals.Distinct().Count() != ordinals.Length) throw new PluginOptionException($"{where}: '{text}' names a device twice");
        return ordinals;
    }

    private static int ParseOrdinal(string text, string where)
    {
        if (!int.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int i))
            throw new PluginOptionException($"{where}: expected an integer, got '{text}'" + (where.EndsWith("device", StringComparison.Ordinal) ? "" : " (device indices like 0,1, or all)"));
        return i is >= 0 and <= 1023 ? i : throw new PluginOptionException($"{where}: {i} is outside [0, 1023]");
    }

    private static int ParseVirtual(string text, string where)
        => int.TryParse(text.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n is >= 1 and <= MaxVirtualDevices
            ? n : throw new PluginOptionException($"{where}: expected a number of devices per GPU 1..{MaxVirtualDevices}, got '{text}'");
}

/// <summary>
/// What the CUDA and HIP entry types share (docs/hip.md#one-gpu-code-base): read the device selection and the kernel
/// options, open the vendor's runtime for each selected GPU in the probe (a missing library, device or compile is a
/// rejection reason, never an exception), and register one <see cref="GpuDevice"/> per GPU, or N per GPU with
/// <c>virtual_devices</c> (docs/multi-gpu.md#two-devices-on-one-gpu). A vendor plugin names itself and binds its runtime.
/// </summary>
public abstract class GpuPlugin : IBackendPlugin
{
    private readonly List<(GpuRuntime Runtime, string Details)> _runtimes = [];

    public abstract string Name { get; }

    public int ApiVersion => PluginApi.Major;
    public int ApiMinorVersion => PluginApi.Minor;

    /// <summary>The vendor's kernel options (plugins.json options, environment overrides).</summary>
    private protected abstract GpuKernelOptions ReadKernelOptions(PluginOptions options);

    /// <summary>How many GPUs the vendor's runtime reports, or 0 with the reason (no library, no device).</summary>
    private protected abstract int CountDevices(string pluginDirectory, out string reason);

    /// <summary>
    /// Opens device <paramref name="ordinal"/> through the vendor's runtime, or null with the reason. <paramref name="virtualIndex"/>
    /// above 0 asks for another virtual device of the same GPU: its own context where the vendor has them (CUDA).
    /// </summary>
    private protected abstract GpuRuntime? TryCreateRuntime(int ordinal, int virtualIndex, string pluginDirectory, string? cacheDirectory, GpuKernelOptions kernels,
                                                            out string reason, out string details);

    public ProbeResult Probe(PluginContext context)
    {
        GpuDeviceSelection selection;
        GpuKernelOptions kernels;
        try
        {
            selection = GpuDeviceSelection.Read(context.Options, Environment.GetEnvironmentVariable, Name);
            kernels = ReadKernelOptions(context.Options);
        }
        catch (PluginOptionException e) { return ProbeResult.Unavailable(e.Message); }
        int count = CountDevices(context.PluginDirectory, out string countReason);
        if (count == 0) return ProbeResult.Unavailable(countReason);
        var ordinals = selection.Ordinals ?? Enumerable.Range(0, count).ToArray();
        if (ordinals.FirstOrDefault(o => o >= count, -1) is var missing and >= 0)
            return ProbeResult.Unavailable($"device index {missing} requested, {count} {Name.ToUpperInvariant()} device(s) present");

        string? first = null;
        var failures = new List<string>();
        foreach (int ordinal in ordinals)
            for (int v = 0; v < selection.VirtualDevices; v++)
            {
                var rt = TryCreateRuntime(ordinal, v, context.PluginDirectory, context.Options.GetString("kernelCache"), kernels, out string reason, out string details);
                if (rt is null)
                {
                    failures.Add($"device {ordinal}{(selection.VirtualDevices > 1 ? $" (virtual {v})" : "")}: {reason}");
                    if (v == 0) break; // the GPU itself did not open: no virtual devices of it either
                    continue;
                }
                if (selection.VirtualDevices > 1) rt.Virtual = (v, selection.VirtualDevices);
                _runtimes.Add((rt, details));
                first ??= reason;
            }
        if (first is null) return ProbeResult.Unavailable(failures.Count == 1 ? failures[0].Split(": ", 2)[1] : string.Join("; ", failures));
        string more = _runtimes.Count > 1 ? $"; {_runtimes.Count} devices" + (selection.VirtualDevices > 1 ? $" ({selection.VirtualDevices} virtual devices per GPU, for testing)" : "") : "";
        return ProbeResult.Available(100, first + more + (failures.Count > 0 ? $"; not opened: {string.Join("; ", failures)}" : ""));
    }

    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        if (_runtimes.Count == 0) throw new InvalidOperationException($"{Name}: ConfigureServices called without a successful probe");
        foreach (var (runtime, details) in _runtimes)
            services.AddSingleton<IBackendDevice>(_ => new GpuDevice(runtime, details));
    }
}

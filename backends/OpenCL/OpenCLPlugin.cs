using Microsoft.Extensions.DependencyInjection;
using PluginEngine.Abstractions;

namespace PluginEngine.Backends.OpenCL;

/// <summary>
/// Entry type of the OpenCL backend plugin. Options (plugins.json): <c>platform</c> and <c>device</c> indexes
/// (default 0, 0) choose the device; <c>kernels</c> (auto, cpu, gpu) the shape of the matmul and attention kernels (auto:
/// CPU-shaped on CPU devices such as PoCL). The probe never throws: a missing ICD loader, no platform or no device is a
/// score of 0 with the reason.
/// </summary>
public sealed class OpenCLPlugin : IBackendPlugin
{
    public string Name => "opencl";

    public int ApiVersion => PluginApi.Major;
    public int ApiMinorVersion => PluginApi.Minor;

    public ProbeResult Probe(PluginContext context)
    {
        try
        {
            var found = OpenCLDeviceLocator.Locate(context.Options);
            if (found.Error is not null) return ProbeResult.Unavailable(found.Error);
            var info = found.Info!;
            // GPUs outrank a CPU device (PoCL) when several opencl plugin entries compete.
            int score = info.Type == OpenCLRuntime.DeviceTypeGpu ? 100 : 20;
            return ProbeResult.Available(score, $"{info.DeviceName} on {info.PlatformName} (platform {info.PlatformIndex}, device {info.DeviceIndex}), {info.Version}");
        }
        catch (PluginOptionException e)
        {
            return ProbeResult.Unavailable(e.Message);
        }
        catch (Exception e)
        {
            return ProbeResult.Unavailable($"OpenCL probe failed: {e.GetType().Name}: {e.Message}");
        }
    }

    public void ConfigureServices(IServiceCollection services, PluginContext context)
        => services.AddSingleton<IBackendDevice>(_ => new OpenCLDevice(OpenCLDeviceLocator.Locate(context.Options).Info
            ?? throw new OpenCLException("opencl: the device found by the probe is gone")));
}

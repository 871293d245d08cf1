using PluginEngine.Abstractions;

namespace PluginEngine.Backends.OpenCL;

/// <summary>Facts about the selected OpenCL device, read once.</summary>
internal sealed record OpenCLDeviceInfo(
    nint Platform, nint Device, int PlatformIndex, int DeviceIndex, string PlatformName, string DeviceName, string Vendor,
    string Version, string DriverVersion, ulong Type, bool HostUnifiedMemory, long GlobalMemory, long MaxAllocation,
    uint ComputeUnits, string? PciBusId, bool CpuShapedKernels);

/// <summary>
/// Finds the device the <c>platform</c>/<c>device</c> options name, or says why there is none; the <c>kernels</c> option
/// (auto, cpu, gpu) picks the shape of the matmul and attention kernels, auto meaning the CPU shape exactly for CPU devices (PoCL).
/// </summary>
internal static class OpenCLDeviceLocator
{
    public static (OpenCLDeviceInfo? Info, string? Error) Locate(PluginOptions options)
    {
        int platformIndex = options.GetInt32("platform", 0, 0, 255);
        int deviceIndex = options.GetInt32("device", 0, 0, 255);
        string shape = options.GetString("kernels", "auto")!;
        bool? cpuShape = shape.Trim().ToLowerInvariant() switch
        {
            "auto" => null,
            "cpu" => true,
            "gpu" => false,
            _ => throw new PluginOptionException($"{options.JsonPath}.kernels: expected auto, cpu or gpu, got '{shape}'"),
        };
        var (cl, loadError) = OpenCLRuntime.TryGetApi();
        if (cl is null) return (null, loadError);

        var platforms = OpenCLRuntime.GetPlatforms(cl);
        if (platforms.Length == 0) return (null, "no OpenCL platform (install an ICD such as pocl-opencl-icd or a GPU driver)");
        if (platformIndex >= platforms.Length)
            return (null, $"{options.JsonPath}.platform: index {platformIndex} is out of range ({platforms.Length} OpenCL platform(s))");
        nint platform = platforms[platformIndex];
        string platformName = OpenCLRuntime.PlatformString(cl, platform, OpenCLRuntime.PlatformName);

        var devices = OpenCLRuntime.GetDevices(cl, platform);
        if (devices.Length == 0) return (null, $"no device on OpenCL platform {platformIndex} ({platformName})");
        if (deviceIndex >= devices.Length)
            return (null, $"{options.JsonPath}.device: index {deviceIndex} is out of range ({devices.Length} device(s) on {platformName})");
        nint device = devices[deviceIndex];

        string extensions = OpenCLRuntime.DeviceString(cl, device, OpenCLRuntime.DeviceExtensions);
        ulong type = OpenCLRuntime.DeviceValue<ulong>(cl, device, OpenCLRuntime.DeviceType);
        return (new OpenCLDeviceInfo(
            platform, device, platformIndex, deviceIndex, platformName,
            OpenCLRuntime.DeviceString(cl, device, OpenCLRuntime.DeviceName),
            OpenCLRuntime.DeviceString(cl, device, OpenCLRuntime.DeviceVendor),
            OpenCLRuntime.DeviceString(cl, device, OpenCLRuntime.DeviceVersion),
            OpenCLRuntime.DeviceString(cl, device, OpenCLRuntime.DriverVersion),
            type,
            OpenCLRuntime.DeviceValue<uint>(cl, device, OpenCLRuntime.DeviceHostUnifiedMemory) != 0,
            (long)OpenCLRuntime.DeviceValue<ulong>(cl, device, OpenCLRuntime.DeviceGlobalMemSize),
            (long)OpenCLRuntime.DeviceValue<ulong>(cl, device, OpenCLRuntime.DeviceMaxMemAllocSize),
            OpenCLRuntime.DeviceValue<uint>(cl, device, OpenCLRuntime.DeviceMaxComputeUnits),
            extensions.Contains("cl_khr_pci_bus_info", StringComparison.Ordinal) ? OpenCLRuntime.PciBusId(cl, device) : null,
            cpuShape ?? type == OpenCLRuntime.DeviceTypeCpu), null);
    }
}

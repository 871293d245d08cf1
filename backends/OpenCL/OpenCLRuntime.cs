using System.Runtime.InteropServices;
using System.Text;
using Silk.NET.OpenCL;

namespace PluginEngine.Backends.OpenCL;

/// <summary>An OpenCL call failed; the message names the call and the error code.</summary>
public sealed class OpenCLException(string message) : Exception(message);

/// <summary>
/// The process-wide OpenCL entry points (through Silk.NET) plus the info queries the plugin needs. The native library
/// is resolved first with <see cref="NativeLibrary.TryLoad(string, out nint)"/>, so a missing ICD loader is a reason
/// string, never a <see cref="DllNotFoundException"/>.
/// </summary>
internal static unsafe class OpenCLRuntime
{
    // Raw cl_*_info values (OpenCL 1.2 headers), used with the uint overloads so the code does not depend on enum member names.
    public const uint PlatformName = 0x0902;
    public const uint PlatformVersion = 0x0901;
    public const uint DeviceType = 0x1000;
    public const uint DeviceMaxComputeUnits = 0x1002;
    public const uint DeviceGlobalMemSize = 0x101F;
    public const uint DeviceMaxMemAllocSize = 0x1010;
    public const uint DeviceName = 0x102B;
    public const uint DeviceVendor = 0x102C;
    public const uint DriverVersion = 0x102D;
    public const uint DeviceVersion = 0x102F;
    public const uint DeviceExtensions = 0x1030;
    public const uint DeviceHostUnifiedMemory = 0x1035;
    public const uint DevicePciBusInfoKhr = 0x410F;
    public const uint ProgramBuildLog = 0x1183;

    public const ulong DeviceTypeCpu = 1 << 1;
    public const ulong DeviceTypeGpu = 1 << 2;
    public const ulong DeviceTypeAccelerator = 1 << 3;
    public const ulong DeviceTypeAll = 0xFFFFFFFF;

    public const int PlatformNotFoundKhr = -1001;
    public const int DeviceNotFound = -1;

    /// <summary>File name of the ICD loader on this OS.</summary>
    public static string LibraryName => OperatingSystem.IsWindows() ? "OpenCL.dll" : OperatingSystem.IsMacOS() ? "/System/Library/Frameworks/OpenCL.framework/OpenCL" : "libOpenCL.so.1";

    private static readonly Lazy<(CL? Api, string? Error)> Loaded = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>The API, or null with the reason it could not be loaded.</summary>
    public static (CL? Api, string? Error) TryGetApi() => Loaded.Value;

    /// <summary>The API; throws when <see cref="TryGetApi"/> would report an error.</summary>
    public static CL Api => Loaded.Value.Api ?? throw new OpenCLException(Loaded.Value.Error!);

    private static (CL?, string?) Load()
    {
        if (!NativeLibrary.TryLoad(LibraryName, out _))
            return (null, $"{LibraryName} not found (install ocl-icd-libopencl1)");
        try
        {
            return (CL.GetApi(), null);
        }
        catch (Exception e)
        {
            return (null, $"{LibraryName} could not be bound: {e.GetType().Name}: {e.Message}");
        }
    }

    /// <summary>Throws <see cref="OpenCLException"/> when <paramref name="error"/> is not CL_SUCCESS.</summary>
    public static void Check(int error, string call)
    {
        if (error != 0) throw new OpenCLException($"opencl: {call} failed with {ErrorName(error)} ({error})");
    }

    /// <summary>Symbolic name of an OpenCL error code.</summary>
    public static string ErrorName(int error) => error switch
    {
        0 => "CL_SUCCESS",
        -1 => "CL_DEVICE_NOT_FOUND",
        -2 => "CL_DEVICE_NOT_AVAILABLE",
        -3 => "CL_COMPILER_NOT_AVAILABLE",
        -4 => "CL_MEM_OBJECT_ALLOCATION_FAILURE",
        -5 => "CL_OUT_OF_RESOURCES",
        -6 => "CL_OUT_OF_HOST_MEMORY",
        -11 => "CL_BUILD_PROGRAM_FAILURE",
        -30 => "CL_INVALID_VALUE",
        -32 => "CL_INVALID_PLATFORM",
        -33 => "CL_INVALID_DEVICE",
        -34 => "CL_INVALID_CONTEXT",
        -36 => "CL_INVALID_COMMAND_QUEUE",
        -37 => "CL_INVALID_HOST_PTR",
        -38 => "CL_INVALID_MEM_OBJECT",
        -46 => "CL_INVALID_KERNEL_NAME",
        -48 => "CL_INVALID_KERNEL",
        -49 => "CL_INVALID_ARG_INDEX",
        -50 => "CL_INVALID_ARG_VALUE",
        -51 => "CL_INVALID_ARG_SIZE",
        -52 => "CL_INVALID_KERNEL_ARGS",
        -54 => "CL_INVALID_WORK_GROUP_SIZE",
        -55 => "CL_INVALID_WORK_ITEM_SIZE",
        -61 => "CL_INVALID_BUFFER_SIZE",
        -1001 => "CL_PLATFORM_NOT_FOUND_KHR",
        _ => "CL error",
    };

    /// <summary>Every platform id (empty when the ICD loader finds none).</summary>
    public static nint[] GetPlatforms(CL cl)
    {
        uint count = 0;
        int err = cl.GetPlatformIDs(0, (nint*)null, &count);
        if (err == PlatformNotFoundKhr || count == 0) return [];
        Check(err, "clGetPlatformIDs");
        var ids = new nint[count];
        fixed (nint* p = ids) Check(cl.GetPlatformIDs(count, p, (uint*)null), "clGetPlatformIDs");
        return ids;
    }

    /// <summary>Every device of <paramref name="platform"/> (empty when it has none).</summary>
    public static nint[] GetDevices(CL cl, nint platform)
    {
        uint count = 0;
        int err = cl.GetDeviceIDs(platform, (Silk.NET.OpenCL.DeviceType)DeviceTypeAll, 0, (nint*)null, &count);
        if (err == DeviceNotFound || count == 0) return [];
        Check(err, "clGetDeviceIDs");
        var ids = new nint[count];
        fixed (nint* p = ids) Check(cl.GetDeviceIDs(platform, (Silk.NET.OpenCL.DeviceType)DeviceTypeAll, count, p, (uint*)null), "clGetDeviceIDs");
        return ids;
    }

    public static string PlatformString(CL cl, nint platform, uint param)
    {
        nuint size = 0;
        Check(cl.GetPlatformInfo(platform, (PlatformInfo)param, 0, null, &size), "clGetPlatformInfo");
        var bytes = new byte[(int)size];
        fixed (byte* p = bytes) Check(cl.GetPlatformInfo(platform, (PlatformInfo)param, size, p, null), "clGetPlatformInfo");
        return CString(bytes);
    }

    public static string DeviceString(CL cl, nint device, uint param)
    {
        nuint size = 0;
        Check(cl.GetDeviceInfo(device, (DeviceInfo)param, 0, null, &size), "clGetDeviceInfo");
        var bytes = new byte[(int)size];
        fixed (byte* p = bytes) Check(cl.GetDeviceInfo(device, (DeviceInfo)param, size, p, null), "clGetDeviceInfo");
        return CString(bytes);
    }

    public static T DeviceValue<T>(CL cl, nint device, uint param) where T : unmanaged
    {
        T value = default;
        Check(cl.GetDeviceInfo(device, (DeviceInfo)param, (nuint)sizeof(T), &value, null), "clGetDeviceInfo");
        return value;
    }

    /// <summary>cl_khr_pci_bus_info's struct, or null when the query is not supported.</summary>
    public static string? PciBusId(CL cl, nint device)
    {
        PciBusInfo info;
        if (cl.GetDeviceInfo(device, (DeviceInfo)DevicePciBusInfoKhr, (nuint)sizeof(PciBusInfo), &info, null) != 0) return null;
        return $"{info.Domain:x4}:{info.Bus:x2}:{info.Device:x2}.{info.Function:x}";
    }

    private static string CString(byte[] bytes)
    {
        int n = Array.IndexOf(bytes, (byte)0);
        return Encoding.UTF8.GetString(bytes, 0, n < 0 ? bytes.Length : n).Trim();
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PciBusInfo
    {
        public uint Domain, Bus, Device, Function;
    }
}

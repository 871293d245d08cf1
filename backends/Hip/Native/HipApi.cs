using System.Runtime.InteropServices;
using System.Text;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Hip.Native;

/// <summary>
/// The subset of the HIP runtime API (libamdhip64.so: ROCm 7, 6 and 5 sonames) this backend uses, bound through function
/// pointers resolved with <see cref="NativeLibrary"/>, so that a missing library or symbol is a probe rejection, never a
/// <see cref="DllNotFoundException"/>. Enum values are HIP's own (hip_runtime_api.h, the CUDA-compatible numbering HIP
/// has used since ROCm 4.2; ROCm 6 only appended to it).
/// </summary>
internal sealed unsafe class HipApi
{
    // hipDeviceAttribute_t values.
    public const int AttrCanMapHostMemory = 3;
    public const int AttrIntegrated = 16;
    public const int AttrMultiprocessorCount = 63;
    public const int AttrWarpSize = 87;

    // hipHostRegister flags.
    public const uint HostRegisterMapped = 0x2;
    public const uint HostRegisterReadOnly = 0x8;

    /// <summary>hipErrorInvalidValue.</summary>
    public const int ErrorInvalidValue = 1;

    /// <summary>Offset of gcnArchName[256] in hipDeviceProp_tR0600 (ROCm 6 and later).</summary>
    public const int GcnArchNameOffsetR0600 = 1160;

    /// <summary>Library names tried, in order (newest ROCm first; the unversioned name last, for a developer's symlink).</summary>
    public static readonly string[] LibraryNames = ["libamdhip64.so.7", "libamdhip64.so.6", "libamdhip64.so.5", "libamdhip64.so", "amdhip64.dll"];

    public delegate* unmanaged<uint, int> hipInit;
    public delegate* unmanaged<int*, int> hipRuntimeGetVersion;
    public delegate* unmanaged<int*, int> hipGetDeviceCount;
    public delegate* unmanaged<int, int> hipSetDevice;
    public delegate* unmanaged<byte*, int, int, int> hipDeviceGetName;
    public delegate* unmanaged<byte*, int, int, int> hipDeviceGetPCIBusId;
    public delegate* unmanaged<int*, int, int, int> hipDeviceGetAttribute;
    public delegate* unmanaged<nuint*, int, int> hipDeviceTotalMem;
    public delegate* unmanaged<void*, int, int> hipGetDeviceProperties;       // the ROCm 5 layout (hipDeviceProp_t)
    public delegate* unmanaged<void*, int, int> hipGetDevicePropertiesR0600;  // ROCm 6+ (optional)
    public delegate* unmanaged<nuint*, nuint*, int> hipMemGetInfo;
    public delegate* unmanaged<ulong*, nuint, int> hipMalloc;
    public delegate* unmanaged<ulong, int> hipFree;
    public delegate* unmanaged<void**, nuint, uint, int> hipHostMalloc;
    public delegate* unmanaged<void*, int> hipHostFree;
    public delegate* unmanaged<ulong, void*, nuint, int> hipMemcpyHtoD;
    public delegate* unmanaged<void*, ulong, nuint, int> hipMemcpyDtoH;
    public delegate* unmanaged<ulong, ulong, nuint, int> hipMemcpyDtoD;
    public delegate* unmanaged<ulong, void*, nuint, nint, int> hipMemcpyHtoDAsync;
    public delegate* unmanaged<void*, ulong, nuint, nint, int> hipMemcpyDtoHAsync;
    public delegate* unmanaged<ulong, byte, nuint, nint, int> hipMemsetD8Async;
    public delegate* unmanaged<nint*, uint, int> hipStreamCreateWithFlags;
    public delegate* unmanaged<nint, int> hipStreamSynchronize;
    public delegate* unmanaged<nint, int> hipStreamDestroy;
    public delegate* unmanaged<void*, nuint, uint, int> hipHostRegister;
    public delegate* unmanaged<void*, int> hipHostUnregister;
    public delegate* unmanaged<ulong*, void*, uint, int> hipHostGetDevicePointer;
    public delegate* unmanaged<nint*, void*, int> hipModuleLoadData;
    public delegate* unmanaged<nint*, nint, byte*, int> hipModuleGetFunction;
    public delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> hipModuleLaunchKernel;
    public delegate* unmanaged<int, byte*> hipGetErrorName;
    public delegate* unmanaged<nint*, int> hipEventCreate;
    public delegate* unmanaged<nint, nint, int> hipEventRecord;
    public delegate* unmanaged<float*, nint, nint, int> hipEventElapsedTime;
    public delegate* unmanaged<nint, int> hipEventDestroy;

    // Copies between devices (optional: without them the core copies between devices through host memory).
    public delegate* unmanaged<ulong, int, ulong, int, nuint, nint, int> hipMemcpyPeerAsync;
    public delegate* unmanaged<nint, nint, uint, int> hipStreamWaitEvent;

    private HipApi() { }

    /// <summary>The loaded library's handle (hiprtc lives in it on ROCm 5).</summary>
    public nint Handle { get; private set; }

    /// <summary>Which library file was loaded.</summary>
    public string LibraryName { get; private set; } = "";

    /// <summary>Loads the HIP runtime and binds every entry point; null with the reason when it cannot.</summary>
    public static HipApi? TryLoad(IEnumerable<string> extraFolders, out string? failure)
    {
        var (handle, loaded) = NativeLibraryLoader.TryLoadFirst(LibraryNames, extraFolders);
        if (handle == 0)
        {
            failure = "libamdhip64.so not found (tried libamdhip64.so.7, .so.6, .so.5: ROCm's HIP runtime is not installed, or its lib folder, " +
                      "e.g. /opt/rocm/lib, is not on the library path)";
            return null;
        }
        var h = new HipApi { Handle = handle, LibraryName = loaded };
        var s = new NativeSymbols(handle);
        h.hipInit = (delegate* unmanaged<uint, int>)s.Required("hipInit");
        h.hipRuntimeGetVersion = (delegate* unmanaged<int*, int>)s.Required("hipRuntimeGetVersion");
        h.hipGetDeviceCount = (delegate* unmanaged<int*, int>)s.Required("hipGetDeviceCount");
        h.hipSetDevice = (delegate* unmanaged<int, int>)s.Required("hipSetDevice");
        h.hipDeviceGetName = (delegate* unmanaged<byte*, int, int, int>)s.Required("hipDeviceGetName");
        h.hipDeviceGetPCIBusId = (delegate* unmanaged<byte*, int, int, int>)s.Required("hipDeviceGetPCIBusId");
        h.hipDeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)s.Required("hipDeviceGetAttribute");
        h.hipDeviceTotalMem = (delegate* unmanaged<nuint*, int, int>)s.Required("hipDeviceTotalMem");
        h.hipGetDeviceProperties = (delegate* unmanaged<void*, int, int>)s.Required("hipGetDeviceProperties");
        h.hipGetDevicePropertiesR0600 = (delegate* unmanaged<void*, int, int>)s.Optional("hipGetDevicePropertiesR0600");
        h.hipMemGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)s.Required("hipMemGetInfo");
        h.hipMalloc = (delegate* unmanaged<ulong*, nuint, int>)s.Required("hipMalloc");
        h.hipFree = (delegate* unmanaged<ulong, int>)s.Required("hipFree");
        h.hipHostMalloc = (delegate* unmanaged<void**, nuint, uint, int>)s.Required("hipHostMalloc");
        h.hipHostFree = (delegate* unmanaged<void*, int>)s.Required("hipHostFree");
        h.hipMemcpyHtoD = (delegate* unmanaged<ulong, void*, nuint, int>)s.Required("hipMemcpyHtoD");
        h.hipMemcpyDtoH = (delegate* unmanaged<void*, ulong, nuint, int>)s.Required("hipMemcpyDtoH");
        h.hipMemcpyDtoD = (delegate* unmanaged<ulong, ulong, nuint, int>)s.Required("hipMemcpyDtoD");
        h.hipMemcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, nint, int>)s.Required("hipMemcpyHtoDAsync");
        h.hipMemcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, nint, int>)s.Required("hipMemcpyDtoHAsync");
        h.hipMemsetD8Async = (delegate* unmanaged<ulong, byte, nuint, nint, int>)s.Required("hipMemsetD8Async");
        h.hipStreamCreateWithFlags = (delegate* unmanaged<nint*, uint, int>)s.Required("hipStreamCreateWithFlags");
        h.hipStreamSynchronize = (delegate* unmanaged<nint, int>)s.Required("hipStreamSynchronize");
        h.hipStreamDestroy = (delegate* unmanaged<nint, int>)s.Required("hipStreamDestroy");
        h.hipHostRegister = (delegate* unmanaged<void*, nuint, uint, int>)s.Required("hipHostRegister");
        h.hipHostUnregister = (delegate* unmanaged<void*, int>)s.Required("hipHostUnregister");
        h.hipHostGetDevicePointer = (delegate* unmanaged<ulong*, void*, uint, int>)s.Required("hipHostGetDevicePointer");
        h.hipModuleLoadData = (delegate* unmanaged<nint*, void*, int>)s.Required("hipModuleLoadData");
        h.hipModuleGetFunction = (delegate* unmanaged<nint*, nint, byte*, int>)s.Required("hipModuleGetFunction");
        h.hipModuleLaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)s.Required("hipModuleLaunchKernel");
        h.hipGetErrorName = (delegate* unmanaged<int, byte*>)s.Required("hipGetErrorName");
        h.hipEventCreate = (delegate* unmanaged<nint*, int>)s.Required("hipEventCreate");
        h.hipEventRecord = (delegate* unmanaged<nint, nint, int>)s.Required("hipEventRecord");
        h.hipEventElapsedTime = (delegate* unmanaged<float*, nint, nint, int>)s.Required("hipEventElapsedTime");
        h.hipEventDestroy = (delegate* unmanaged<nint, int>)s.Required("hipEventDestroy");
        h.hipMemcpyPeerAsync = (delegate* unmanaged<ulong, int, ulong, int, nuint, nint, int>)s.Optional("hipMemcpyPeerAsync");
        h.hipStreamWaitEvent = (delegate* unmanaged<nint, nint, uint, int>)s.Optional("hipStreamWaitEvent");
        if (s.Missing is { } missing)
        {
            failure = $"{loaded} {missing} (HIP runtime too old)";
            return null;
        }
        failure = null;
        return h;
    }

    /// <summary>The hipError_t's name (hipErrorNoDevice), from the runtime itself.</summary>
    public string ErrorName(int result)
    {
        byte* s = hipGetErrorName(result);
        return s != null ? Marshal.PtrToStringUTF8((nint)s) ?? $"hipError {result}" : $"hipError {result}";
    }

    /// <summary>Throws <see cref="GpuException"/> when <paramref name="result"/> is not hipSuccess.</summary>
    public void Check(int result, string call)
    {
        if (result != 0) throw new GpuException(call, result, ErrorName(result));
    }

    /// <summary>An integer device attribute.</summary>
    public int Attribute(int device, int attribute, string name)
    {
        int v;
        Check(hipDeviceGetAttribute(&v, attribute, device), $"hipDeviceGetAttribute({name})");
        return v;
    }

    /// <summary>The device's gcnArchName ("gfx90a:sramecc+:xnack-"), from hipDeviceProp_tR0600 where the runtime has it (ROCm 6+), else from ROCm 5's layout.</summary>
    public string ArchName(int device)
    {
        // Larger than either layout (ROCm 6's is about 1.5 KiB), zeroed, so a shorter struct leaves NULs behind it.
        byte[] props = new byte[8192];
        fixed (byte* p = props)
        {
            if (hipGetDevicePropertiesR0600 != null)
            {
                Check(hipGetDevicePropertiesR0600(p, device), "hipGetDevicePropertiesR0600");
                return HipArch.FromPropertiesR0600(props);
            }
            Check(hipGetDeviceProperties(p, device), "hipGetDeviceProperties");
        }
        return HipArch.FromPropertiesScan(props);
    }

    /// <summary>A NUL-terminated string the runtime wrote into a buffer.</summary>
    public static string CString(ReadOnlySpan<byte> bytes)
    {
        int n = bytes.IndexOf((byte)0);
        return Encoding.UTF8.GetString(n >= 0 ? bytes[..n] : bytes);
    }
}

/// <summary>AMD GPU architecture names: what the device reports, and what that means for the kernels. Pure, unit-tested.</summary>
internal static class HipArch
{
    /// <summary>gcnArchName of a hipDeviceProp_tR0600 (ROCm 6+): a fixed offset.</summary>
    public static string FromPropertiesR0600(ReadOnlySpan<byte> props)
        => HipApi.CString(props.Slice(HipApi.GcnArchNameOffsetR0600, 256));

    /// <summary>
    /// gcnArchName of ROCm 5's hipDeviceProp_t, found rather than read at an offset (the layout changed between releases):
    /// the first "gfx" + hex digits string after the 256-byte name. "" when none is there.
    /// </summary>
    public static string FromPropertiesScan(ReadOnlySpan<byte> props)
    {
        for (int i = 256; i + 4 < props.Length; i++)
        {
            if (props[i] != (byte)'g' || props[i + 1] != (byte)'f' || props[i + 2] != (byte)'x' || !IsHex(props[i + 3])) continue;
            if (props[i - 1] != 0) continue; // the start of a field, not the middle of a string
            return HipApi.CString(props[i..Math.Min(props.Length, i + 256)]);
        }
        return "";
    }

    private static bool IsHex(byte b) => b is >= (byte)'0' and <= (byte)'9' or >= (byte)'a' and <= (byte)'f';

    /// <summary>The processor part of an arch name: "gfx90a" of "gfx90a:sramecc+:xnack-".</summary>
    public static string Processor(string archName) => archName.Split(':')[0];

    /// <summary>
    /// The warp (wavefront) size of a processor when the runtime does not say: 64 on GCN and CDNA (gfx9xx and older),
    /// 32 on RDNA (gfx10xx, gfx11xx, gfx12xx), which can run wave64 but whose compilers default to wave32.
    /// </summary>
    public static int DefaultWarpSize(string archName)
    {
        string p = Processor(archName);
        return p.StartsWith("gfx1", StringComparison.Ordinal) && p.Length >= 7 ? 32 : 64;
    }
}

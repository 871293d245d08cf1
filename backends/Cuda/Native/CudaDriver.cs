using System.Runtime.InteropServices;
using PluginEngine.Backends.Gpu.Native;

namespace PluginEngine.Backends.Cuda.Native;

/// <summary>
/// The subset of the CUDA driver API (libcuda.so.1) this backend uses, bound through function pointers
/// resolved with <see cref="NativeLibrary"/> so that a missing library or symbol is a probe rejection,
/// never a <see cref="DllNotFoundException"/> at the first call.
/// </summary>
internal sealed unsafe class CudaDriver
{
    // CUdevice_attribute values (cuda.h).
    public const int AttrMultiprocessorCount = 16;
    public const int AttrIntegrated = 18;
    public const int AttrCanMapHostMemory = 19;
    public const int AttrComputeCapabilityMajor = 75;
    public const int AttrComputeCapabilityMinor = 76;
    public const int AttrReadOnlyHostRegisterSupported = 113;

    // cuMemHostRegister flags.
    public const uint HostRegisterDeviceMap = 0x02;
    public const uint HostRegisterReadOnly = 0x08;

    public const int ErrorInvalidValue = 1;
    public const int ErrorHostMemoryAlreadyRegistered = 712;

    /// <summary>Library names tried, in order.</summary>
    public static readonly string[] LibraryNames = ["libcuda.so.1", "libcuda.so", "nvcuda.dll"];

    public delegate* unmanaged<uint, int> cuInit;
    public delegate* unmanaged<int*, int> cuDriverGetVersion;
    public delegate* unmanaged<int*, int> cuDeviceGetCount;
    public delegate* unmanaged<int*, int, int> cuDeviceGet;
    public delegate* unmanaged<byte*, int, int, int> cuDeviceGetName;
    public delegate* unmanaged<int*, int, int, int> cuDeviceGetAttribute;
    public delegate* unmanaged<nuint*, int, int> cuDeviceTotalMem;
    public delegate* unmanaged<byte*, int, int, int> cuDeviceGetPCIBusId;
    public delegate* unmanaged<nint*, int, int> cuDevicePrimaryCtxRetain;
    public delegate* unmanaged<nint, int> cuCtxSetCurrent;
    public delegate* unmanaged<nuint*, nuint*, int> cuMemGetInfo;
    public delegate* unmanaged<ulong*, nuint, int> cuMemAlloc;
    public delegate* unmanaged<ulong, int> cuMemFree;
    public delegate* unmanaged<void**, nuint, int> cuMemAllocHost;
    public delegate* unmanaged<void*, int> cuMemFreeHost;
    public delegate* unmanaged<ulong, void*, nuint, int> cuMemcpyHtoD;
    public delegate* unmanaged<void*, ulong, nuint, int> cuMemcpyDtoH;
    public delegate* unmanaged<ulong, ulong, nuint, int> cuMemcpyDtoD;
    public delegate* unmanaged<ulong, void*, nuint, nint, int> cuMemcpyHtoDAsync;
    public delegate* unmanaged<void*, ulong, nuint, nint, int> cuMemcpyDtoHAsync;
    public delegate* unmanaged<ulong, byte, nuint, nint, int> cuMemsetD8Async;
    public delegate* unmanaged<nint*, uint, int> cuStreamCreate;
    public delegate* unmanaged<nint, int> cuStreamSynchronize;
    public delegate* unmanaged<nint, int> cuStreamDestroy;
    public delegate* unmanaged<void*, nuint, uint, int> cuMemHostRegister;
    public delegate* unmanaged<void*, int> cuMemHostUnregister;
    public delegate* unmanaged<ulong*, void*, uint, int> cuMemHostGetDevicePointer;
    public delegate* unmanaged<nint*, void*, int> cuModuleLoadData;
    public delegate* unmanaged<nint*, nint, byte*, int> cuModuleGetFunction;
    public delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int> cuLaunchKernel;
    public delegate* unmanaged<int, byte**, int> cuGetErrorName;
    public delegate* unmanaged<nint*, uint, int> cuEventCreate;
    public delegate* unmanaged<nint, nint, int> cuEventRecord;
    public delegate* unmanaged<float*, nint, nint, int> cuEventElapsedTime;
    public delegate* unmanaged<nint, int> cuEventDestroy;

    // Graphs built node by node (optional: null when the driver lacks them; see HasGraphs). CudaStepGraph uses them.
    public delegate* unmanaged<nint*, uint, int> cuGraphCreate;
    public delegate* unmanaged<nint*, nint, nint*, nuint, KernelNodeParams*, int> cuGraphAddKernelNode;
    public delegate* unmanaged<nint, nint*, nint*, GraphEdgeData*, nuint, int> cuGraphAddDependencies; // CUDA 12.3: programmatic edges
    public delegate* unmanaged<nint*, nint, ulong, int> cuGraphInstantiateWithFlags;
    public delegate* unmanaged<nint, nint, KernelNodeParams*, int> cuGraphExecKernelNodeSetParams;
    public delegate* unmanaged<nint, nint, int> cuGraphLaunch;
    public delegate* unmanaged<nint, int> cuGraphDestroy;
    public delegate* unmanaged<nint, int> cuGraphExecDestroy;
    public delegate* unmanaged<nint, nuint, nuint*, nuint*, int> cuFuncGetParamInfo; // CUDA 12.4

    // Extra contexts (virtual devices, docs/multi-gpu.md#two-devices-on-one-gpu) and copies between contexts (optional:
    // a driver without them offers no virtual devices, and the core copies between devices through host memory).
    public delegate* unmanaged<nint*, uint, int, int> cuCtxCreate;
    public delegate* unmanaged<nint*, void*, uint, int, int> cuCtxCreateV4; // a driver without _v2 (none known): null parameters
    public delegate* unmanaged<nint*, int> cuCtxPopCurrent;
    public delegate* unmanaged<ulong, nint, ulong, nint, nuint, nint, int> cuMemcpyPeerAsync;
    public delegate* unmanaged<nint, nint, uint, int> cuStreamWaitEvent;
    public delegate* unmanaged<int*, int, int, int> cuDeviceCanAccessPeer;
    public delegate* unmanaged<nint, uint, int> cuCtxEnablePeerAccess;

    /// <summary>CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED: another copy enabled it first; not a failure.</summary>
    public const int ErrorPeerAccessAlreadyEnabled = 704;

    /// <summary>Whether copies between contexts can be issued (cuMemcpyPeerAsync and cuStreamWaitEvent resolved).</summary>
    public bool HasPeerCopies => cuMemcpyPeerAsync != null && cuStreamWaitEvent != null;

    // Launch with attributes (optional: CUDA 12 drivers and later), for programmatic dependent launch.
    public delegate* unmanaged<LaunchConfig*, nint, void**, void**, int> cuLaunchKernelEx;
    public delegate* unmanaged<int*, nint, int, nuint, int> cuOccupancyMaxActiveBlocksPerMultiprocessor;

    /// <summary>CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: the kernel may start before the previous kernel in the
    /// stream has finished; it waits for it with griddepcontrol.wait (kernels.cu's PDL_ENTRY).</summary>
    public const int LaunchAttributeProgrammaticStreamSerialization = 6;

    /// <summary>CUlaunchConfig (cuda.h): grid, block, shared memory, stream, attributes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct LaunchConfig
    {
        public uint GridX, GridY, GridZ, BlockX, BlockY, BlockZ, SharedMemBytes;
        public nint Stream;
        public LaunchAttribute* Attributes;
        public uint AttributeCount;
    }

    /// <summary>CUlaunchAttribute (cuda.h): an id, padding to 8 bytes, then a 64-byte value union (only its first int used here).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 72)]
    public struct LaunchAttribute
    {
        [FieldOffset(0)] public int Id;
        [FieldOffset(8)] public int Value;
    }

    /// <summary>CUDA_KERNEL_NODE_PARAMS_v2 (cuda.h): a kernel node's function, geometry and parameter pointers (copied by the call).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct KernelNodeParams
    {
        public nint Function;
        public uint GridX, GridY, GridZ, BlockX, BlockY, BlockZ, SharedMemBytes;
        public void** KernelParams;
        public void** Extra;
        public nint Kernel;  // CUkernel, used only when Function is null
        public nint Context; // CUcontext, ignored when Function is set
    }

    /// <summary>CUgraphEdgeData (cuda.h): ports and type of a dependency; the reserved bytes stay zero.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 8)]
    public struct GraphEdgeData
    {
        public byte FromPort, ToPort, Type;
    }

    /// <summary>CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC: the edge fires when every block of the upstream kernel has triggered or exited.</summary>
    public const byte GraphKernelNodePortProgrammatic = 1;

    /// <summary>CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC: the downstream kernel may start early and waits with griddepcontrol.wait.</summary>
    public const byte GraphDependencyTypeProgrammatic = 1;

    /// <summary>Whether the graph entry points step graphs need resolved (CUDA 12.4 drivers and later).</summary>
    public bool HasGraphs => cuGraphCreate != null && cuGraphAddKernelNode != null && cuGraphInstantiateWithFlags != null &&
                             cuGraphExecKernelNodeSetParams != null && cuGraphLaunch != null && cuGraphDestroy != null &&
                             cuGraphExecDestroy != null && cuFuncGetParamInfo != null;

    private CudaDriver() { }

    /// <summary>A driver with no entry point bound, for tests that bind recording fakes to the ones they exercise.</summary>
    internal static CudaDriver Unbound() => new();

    /// <summary>Loads the driver library and binds every entry point; returns null with the reason when it cannot.</summary>
    public static CudaDriver? TryLoad(out string? failure)
    {
        nint handle = 0;
        foreach (string name in LibraryNames)
            if (NativeLibrary.TryLoad(name, out handle)) break;
        if (handle == 0)
        {
            failure = "libcuda.so.1 not found (the NVIDIA driver is not installed, or its folder is not on the library path)";
            return null;
        }
        var d = new CudaDriver();
        var symbols = new NativeSymbols(handle);
        d.cuInit = (delegate* unmanaged<uint, int>)symbols.Required("cuInit");
        d.cuDriverGetVersion = (delegate* unmanaged<int*, int>)symbols.Required("cuDriverGetVersion");
        d.cuDeviceGetCount = (delegate* unmanaged<int*, int>)symbols.Required("cuDeviceGetCount");
        d.cuDeviceGet = (delegate* unmanaged<int*, int, int>)symbols.Required("cuDeviceGet");
        d.cuDeviceGetName = (delegate* unmanaged<byte*, int, int, int>)symbols.Required("cuDeviceGetName");
        d.cuDeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)symbols.Required("cuDeviceGetAttribute");
        d.cuDeviceTotalMem = (delegate* unmanaged<nuint*, int, int>)symbols.Required("cuDeviceTotalMem_v2");
        d.cuDeviceGetPCIBusId = (delegate* unmanaged<byte*, int, int, int>)symbols.Required("cuDeviceGetPCIBusId");
        d.cuDevicePrimaryCtxRetain = (delegate* unmanaged<nint*, int, int>)symbols.Required("cuDevicePrimaryCtxRetain");
        d.cuCtxSetCurrent = (delegate* unmanaged<nint, int>)symbols.Required("cuCtxSetCurrent");
        d.cuMemGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)symbols.Required("cuMemGetInfo_v2");
        d.cuMemAlloc = (delegate* unmanaged<ulong*, nuint, int>)symbols.Required("cuMemAlloc_v2");
        d.cuMemFree = (delegate* unmanaged<ulong, int>)symbols.Required("cuMemFree_v2");
        d.cuMemAllocHost = (delegate* unmanaged<void**, nuint, int>)symbols.Required("cuMemAllocHost_v2");
        d.cuMemFreeHost = (delegate* unmanaged<void*, int>)symbols.Required("cuMemFreeHost");
        d.cuMemcpyHtoD = (delegate* unmanaged<ulong, void*, nuint, int>)symbols.Required("cuMemcpyHtoD_v2");
        d.cuMemcpyDtoH = (delegate* unmanaged<void*, ulong, nuint, int>)symbols.Required("cuMemcpyDtoH_v2");
        d.cuMemcpyDtoD = (delegate* unmanaged<ulong, ulong, nuint, int>)symbols.Required("cuMemcpyDtoD_v2");
        d.cuMemcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, nint, int>)symbols.Required("cuMemcpyHtoDAsync_v2");
        d.cuMemcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, nint, int>)symbols.Required("cuMemcpyDtoHAsync_v2");
        d.cuMemsetD8Async = (delegate* unmanaged<ulong, byte, nuint, nint, int>)symbols.Required("cuMemsetD8Async");
        d.cuStreamCreate = (delegate* unmanaged<nint*, uint, int>)symbols.Required("cuStreamCreate");
        d.cuStreamSynchronize = (delegate* unmanaged<nint, int>)symbols.Required("cuStreamSynchronize");
        d.cuStreamDestroy = (delegate* unmanaged<nint, int>)symbols.Required("cuStreamDestroy_v2");
        d.cuMemHostRegister = (delegate* unmanaged<void*, nuint, uint, int>)symbols.Required("cuMemHostRegister_v2");
        d.cuMemHostUnregister = (delegate* unmanaged<void*, int>)symbols.Required("cuMemHostUnregister");
        d.cuMemHostGetDevicePointer = (delegate* unmanaged<ulong*, void*, uint, int>)symbols.Required("cuMemHostGetDevicePointer_v2");
        d.cuModuleLoadData = (delegate* unmanaged<nint*, void*, int>)symbols.Required("cuModuleLoadData");
        d.cuModuleGetFunction = (delegate* unmanaged<nint*, nint, byte*, int>)symbols.Required("cuModuleGetFunction");
        d.cuLaunchKernel = (delegate* unmanaged<nint, uint, uint, uint, uint, uint, uint, uint, nint, void**, void**, int>)symbols.Required("cuLaunchKernel");
        d.cuGetErrorName = (delegate* unmanaged<int, byte**, int>)symbols.Required("cuGetErrorName");
        d.cuEventCreate = (delegate* unmanaged<nint*, uint, int>)symbols.Required("cuEventCreate");
        d.cuEventRecord = (delegate* unmanaged<nint, nint, int>)symbols.Required("cuEventRecord");
        d.cuEventElapsedTime = (delegate* unmanaged<float*, nint, nint, int>)symbols.Required("cuEventElapsedTime");
        d.cuEventDestroy = (delegate* unmanaged<nint, int>)symbols.Required("cuEventDestroy_v2");
        d.cuGraphCreate = (delegate* unmanaged<nint*, uint, int>)symbols.Optional("cuGraphCreate");
        d.cuGraphAddKernelNode = (delegate* unmanaged<nint*, nint, nint*, nuint, KernelNodeParams*, int>)symbols.Optional("cuGraphAddKernelNode_v2");
        d.cuGraphAddDependencies = (delegate* unmanaged<nint, nint*, nint*, GraphEdgeData*, nuint, int>)symbols.Optional("cuGraphAddDependencies_v2");
        d.cuGraphInstantiateWithFlags = (delegate* unmanaged<nint*, nint, ulong, int>)symbols.Optional("cuGraphInstantiateWithFlags");
        d.cuGraphExecKernelNodeSetParams = (delegate* unmanaged<nint, nint, KernelNodeParams*, int>)symbols.Optional("cuGraphExecKernelNodeSetParams_v2");
        d.cuGraphLaunch = (delegate* unmanaged<nint, nint, int>)symbols.Optional("cuGraphLaunch");
        d.cuGraphDestroy = (delegate* unmanaged<nint, int>)symbols.Optional("cuGraphDestroy");
        d.cuGraphExecDestroy = (delegate* unmanaged<nint, int>)symbols.Optional("cuGraphExecDestroy");
        d.cuFuncGetParamInfo = (delegate* unmanaged<nint, nuint, nuint*, nuint*, int>)symbols.Optional("cuFuncGetParamInfo");
        d.cuLaunchKernelEx = (delegate* unmanaged<LaunchConfig*, nint, void**, void**, int>)symbols.Optional("cuLaunchKernelEx");
        d.cuOccupancyMaxActiveBlocksPerMultiprocessor = (delegate* unmanaged<int*, nint, int, nuint, int>)symbols.Optional("cuOccupancyMaxActiveBlocksPerMultiprocessor");
        d.cuCtxCreate = (delegate* unmanaged<nint*, uint, int, int>)symbols.Optional("cuCtxCreate_v2");
        d.cuCtxCreateV4 = (delegate* unmanaged<nint*, void*, uint, int, int>)symbols.Optional("cuCtxCreate_v4");
        d.cuCtxPopCurrent = (delegate* unmanaged<nint*, int>)symbols.Optional("cuCtxPopCurrent_v2");
        d.cuMemcpyPeerAsync = (delegate* unmanaged<ulong, nint, ulong, nint, nuint, nint, int>)symbols.Optional("cuMemcpyPeerAsync");
        d.cuStreamWaitEvent = (delegate* unmanaged<nint, nint, uint, int>)symbols.Optional("cuStreamWaitEvent");
        d.cuDeviceCanAccessPeer = (delegate* unmanaged<int*, int, int, int>)symbols.Optional("cuDeviceCanAccessPeer");
        d.cuCtxEnablePeerAccess = (delegate* unmanaged<nint, uint, int>)symbols.Optional("cuCtxEnablePeerAccess");
        if (symbols.Missing is { } missing)
        {
            failure = $"libcuda.so.1 {missing} (driver too old)";
            return null;
        }
        failure = null;
        return d;
    }

    /// <summary>The CUresult's name (e.g. CUDA_ERROR_OUT_OF_MEMORY).</summary>
    public string ErrorName(int result)
    {
        byte* s = null;
        return cuGetErrorName(result, &s) == 0 && s != null ? Marshal.PtrToStringUTF8((nint)s) ?? $"CUresult {result}" : $"CUresult {result}";
    }

    /// <summary>Throws <see cref="GpuException"/> when <paramref name="result"/> is not CUDA_SUCCESS.</summary>
    public void Check(int result, string call)
    {
        if (result != 0) throw new GpuException(call, result, ErrorName(result));
    }

    /// <summary>An integer device attribute.</summary>
    public int Attribute(int device, int attribute)
    {
        int v;
        Check(cuDeviceGetAttribute(&v, attribute, device), "cuDeviceGetAttribute");
        return v;
    }
}

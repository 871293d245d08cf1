// HIP-on-CUDA test shim, runtime part: a stand-in for libamdhip64.so.6 that exports the HIP runtime entry points the
// PluginEngine HIP plugin binds (backends/Hip/Native/HipApi.cs) and forwards each to the CUDA driver API (libcuda.so.1,
// opened at run time). It lets the HIP plugin's own bindings, probe, buffers, host import and queue run on an NVIDIA GPU,
// so that layer is tested where no AMD GPU is lent. It is a test tool, not a HIP implementation: only what the plugin
// calls, with the plugin's argument conventions. See docs/hip.md#the-hip-on-cuda-shim.
// Build: gcc -shared -fPIC -O2 -o libamdhip64.so.6 hip_on_cuda_runtime.c -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

static void* cuda;
#define CU_FN(ret, name, args) static ret(*p_##name) args;
CU_FN(CUresult, cuInit, (unsigned))
CU_FN(CUresult, cuDriverGetVersion, (int*))
CU_FN(CUresult, cuDeviceGetCount, (int*))
CU_FN(CUresult, cuDeviceGet, (int*, int))
CU_FN(CUresult, cuDeviceGetName, (char*, int, int))
CU_FN(CUresult, cuDeviceGetPCIBusId, (char*, int, int))
CU_FN(CUresult, cuDeviceGetAttribute, (int*, int, int))
CU_FN(CUresult, cuDeviceTotalMem_v2, (size_t*, int))
CU_FN(CUresult, cuDevicePrimaryCtxRetain, (void**, int))
CU_FN(CUresult, cuCtxSetCurrent, (void*))
CU_FN(CUresult, cuMemGetInfo_v2, (size_t*, size_t*))
CU_FN(CUresult, cuMemAlloc_v2, (CUdeviceptr*, size_t))
CU_FN(CUresult, cuMemFree_v2, (CUdeviceptr))
CU_FN(CUresult, cuMemAllocHost_v2, (void**, size_t))
CU_FN(CUresult, cuMemFreeHost, (void*))
CU_FN(CUresult, cuMemcpyHtoD_v2, (CUdeviceptr, const void*, size_t))
CU_FN(CUresult, cuMemcpyDtoH_v2, (void*, CUdeviceptr, size_t))
CU_FN(CUresult, cuMemcpyDtoD_v2, (CUdeviceptr, CUdeviceptr, size_t))
CU_FN(CUresult, cuMemcpyHtoDAsync_v2, (CUdeviceptr, const void*, size_t, void*))
CU_FN(CUresult, cuMemcpyDtoHAsync_v2, (void*, CUdeviceptr, size_t, void*))
CU_FN(CUresult, cuMemsetD8Async, (CUdeviceptr, unsigned char, size_t, void*))
CU_FN(CUresult, cuStreamCreate, (void**, unsigned))
CU_FN(CUresult, cuStreamSynchronize, (void*))
CU_FN(CUresult, cuStreamDestroy_v2, (void*))
CU_FN(CUresult, cuMemHostRegister_v2, (void*, size_t, unsigned))
CU_FN(CUresult, cuMemHostUnregister, (void*))
CU_FN(CUresult, cuMemHostGetDevicePointer_v2, (CUdeviceptr*, void*, unsigned))
CU_FN(CUresult, cuModuleLoadData, (void**, const void*))
CU_FN(CUresult, cuModuleGetFunction, (void**, void*, const char*))
CU_FN(CUresult, cuLaunchKernel, (void*, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void*, void**, void**))
CU_FN(CUresult, cuGetErrorName, (CUresult, const char**))
CU_FN(CUresult, cuEventCreate, (void**, unsigned))
CU_FN(CUresult, cuEventRecord, (void*, void*))
CU_FN(CUresult, cuEventElapsedTime, (float*, void*, void*))
CU_FN(CUresult, cuEventDestroy_v2, (void*))

// hipErrorNotInitialized: libcuda.so.1 could not be opened or lacks a symbol.
#define SHIM_NOT_INITIALIZED 3
#define SHIM_INVALID_VALUE 1

static int bind(void)
{
    if (cuda) return 1;
    void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!h) { fprintf(stderr, "hip-on-cuda shim: %s\n", dlerror()); return 0; }
#define BIND(name) if (!(*(void**)&p_##name = dlsym(h, #name))) { fprintf(stderr, "hip-on-cuda shim: libcuda.so.1 lacks %s\n", #name); return 0; }
    BIND(cuInit) BIND(cuDriverGetVersion) BIND(cuDeviceGetCount) BIND(cuDeviceGet) BIND(cuDeviceGetName) BIND(cuDeviceGetPCIBusId)
    BIND(cuDeviceGetAttribute) BIND(cuDeviceTotalMem_v2) BIND(cuDevicePrimaryCtxRetain) BIND(cuCtxSetCurrent) BIND(cuMemGetInfo_v2)
    BIND(cuMemAlloc_v2) BIND(cuMemFree_v2) BIND(cuMemAllocHost_v2) BIND(cuMemFreeHost) BIND(cuMemcpyHtoD_v2) BIND(cuMemcpyDtoH_v2)
    BIND(cuMemcpyDtoD_v2) BIND(cuMemcpyHtoDAsync_v2) BIND(cuMemcpyDtoHAsync_v2) BIND(cuMemsetD8Async) BIND(cuStreamCreate)
    BIND(cuStreamSynchronize) BIND(cuStreamDestroy_v2) BIND(cuMemHostRegister_v2) BIND(cuMemHostUnregister)
    BIND(cuMemHostGetDevicePointer_v2) BIND(cuModuleLoadData) BIND(cuModuleGetFunction) BIND(cuLaunchKernel) BIND(cuGetErrorName)
    BIND(cuEventCreate) BIND(cuEventRecord) BIND(cuEventElapsedTime) BIND(cuEventDestroy_v2)
#undef BIND
    cuda = h;
    return 1;
}

#define NEED() do { if (!bind()) return SHIM_NOT_INITIALIZED; } while (0)

// CUDA's result codes for what the plugin meets (success, invalid value, out of memory, no device, invalid device, ...)
// have HIP's numbers, so results pass through unchanged; their names come from the CUDA driver.
int hipInit(unsigned flags) { (void)flags; NEED(); return p_cuInit(0); }
int hipRuntimeGetVersion(int* v) { *v = 0; return 0; } // 0.0: marks the shim in the probe's description
int hipGetDeviceCount(int* n) { NEED(); return p_cuDeviceGetCount(n); }

int hipSetDevice(int device)
{
    NEED();
    int dev; void* ctx;
    int r = p_cuDeviceGet(&dev, device);
    if (r == 0) r = p_cuDevicePrimaryCtxRetain(&ctx, dev);
    if (r == 0) r = p_cuCtxSetCurrent(ctx);
    return r;
}

int hipDeviceGetName(char* name, int len, int device) { NEED(); return p_cuDeviceGetName(name, len, device); }
int hipDeviceGetPCIBusId(char* bus, int len, int device) { NEED(); return p_cuDeviceGetPCIBusId(bus, len, device); }

// hipDeviceAttribute_t -> CUdevice_attribute, for the attributes the plugin reads.
int hipDeviceGetAttribute(int* value, int attribute, int device)
{
    NEED();
    int cu;
    switch (attribute)
    {
        case 3: cu = 19; break;  // CanMapHostMemory
        case 16: cu = 18; break; // Integrated
        case 63: cu = 16; break; // MultiprocessorCount
        case 87: cu = 10; break; // WarpSize
        default: return SHIM_INVALID_VALUE;
    }
    return p_cuDeviceGetAttribute(value, cu, device);
}

int hipDeviceTotalMem(size_t* bytes, int device) { NEED(); return p_cuDeviceTotalMem_v2(bytes, device); }

// hipDeviceProp_tR0600: name[256] at 0, gcnArchName[256] at 1160. The "arch" of an NVIDIA device is its sm_XY, which the
// rtc shim turns back into NVRTC's --gpu-architecture.
int hipGetDevicePropertiesR0600(void* props, int device)
{
    NEED();
    int major, minor, r;
    char* p = (char*)props;
    if ((r = p_cuDeviceGetName(p, 256, device))) return r;
    if ((r = p_cuDeviceGetAttribute(&major, 75, device)) || (r = p_cuDeviceGetAttribute(&minor, 76, device))) return r;
    snprintf(p + 1160, 256, "sm_%d%d", major, minor);
    return 0;
}

// The ROCm 5 layout is not emulated: the plugin uses R0600 where the runtime exports it.
int hipGetDeviceProperties(void* props, int device) { (void)props; (void)device; return 801; /* hipErrorNotSupported */ }

int hipMemGetInfo(size_t* free, size_t* total) { NEED(); return p_cuMemGetInfo_v2(free, total); }
int hipMalloc(CUdeviceptr* p, size_t size) { NEED(); return p_cuMemAlloc_v2(p, size); }
int hipFree(CUdeviceptr p) { NEED(); return p_cuMemFree_v2(p); }
int hipHostMalloc(void** p, size_t size, unsigned flags) { (void)flags; NEED(); return p_cuMemAllocHost_v2(p, size); }
int hipHostFree(void* p) { NEED(); return p_cuMemFreeHost(p); }
int hipMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) { NEED(); return p_cuMemcpyHtoD_v2(dst, src, n); }
int hipMemcpyDtoH(void* dst, CUdeviceptr src, size_t n) { NEED(); return p_cuMemcpyDtoH_v2(dst, src, n); }
int hipMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n) { NEED(); return p_cuMemcpyDtoD_v2(dst, src, n); }
int hipMemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t n, void* s) { NEED(); return p_cuMemcpyHtoDAsync_v2(dst, src, n, s); }
int hipMemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t n, void* s) { NEED(); return p_cuMemcpyDtoHAsync_v2(dst, src, n, s); }
int hipMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void* s) { NEED(); return p_cuMemsetD8Async(dst, v, n, s); }
// hipStreamDefault (0) = CU_STREAM_DEFAULT (0): a stream that waits for the null stream.
int hipStreamCreateWithFlags(void** s, unsigned flags) { NEED(); return p_cuStreamCreate(s, flags); }
int hipStreamSynchronize(void* s) { NEED(); return p_cuStreamSynchronize(s); }
int hipStreamDestroy(void* s) { NEED(); return p_cuStreamDestroy_v2(s); }
// hipHostRegisterMapped (2) = CU_MEMHOSTREGISTER_DEVICEMAP, hipHostRegisterReadOnly (8) = CU_MEMHOSTREGISTER_READ_ONLY.
int hipHostRegister(void* p, size_t n, unsigned flags) { NEED(); return p_cuMemHostRegister_v2(p, n, flags & (2u | 8u)); }
int hipHostUnregister(void* p) { NEED(); return p_cuMemHostUnregister(p); }
int hipHostGetDevicePointer(CUdeviceptr* d, void* h, unsigned flags) { NEED(); return p_cuMemHostGetDevicePointer_v2(d, h, flags); }
int hipModuleLoadData(void** m, const void* image) { NEED(); return p_cuModuleLoadData(m, image); }
int hipModuleGetFunction(void** f, void* m, const char* name) { NEED(); return p_cuModuleGetFunction(f, m, name); }
int hipModuleLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shared, void* s,
                          void** args, void** extra)
{
    NEED();
    return p_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, s, args, extra);
}

const char* hipGetErrorName(int r)
{
    const char* s = 0;
    if (bind() && p_cuGetErrorName(r, &s) == 0 && s) return s;
    return "hip-on-cuda shim: unknown error";
}

int hipEventCreate(void** e) { NEED(); return p_cuEventCreate(e, 0); }
int hipEventRecord(void* e, void* s) { NEED(); return p_cuEventRecord(e, s); }
int hipEventElapsedTime(float* ms, void* a, void* b) { NEED(); return p_cuEventElapsedTime(ms, a, b); }
int hipEventDestroy(void* e) { NEED(); return p_cuEventDestroy_v2(e); }

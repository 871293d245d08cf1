"""The few CUDA driver and NVRTC calls the device probes need, through ctypes (the GPU machine has python3, no numpy, no SDK).

Used by measure-read-bandwidth.py, compare-host-register.py and probe-host-register.py: a context on GPU 0, a kernel compiled for its
architecture, a timed launch loop, and the read kernel both of them time.
"""
import ctypes

cuda = ctypes.CDLL("libcuda.so.1")
cuda.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
cuda.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]
cuda.cuMemFree_v2.argtypes = [ctypes.c_uint64]
cuda.cuMemHostRegister_v2.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint]
cuda.cuMemHostUnregister.argtypes = [ctypes.c_void_p]
cuda.cuMemHostGetDevicePointer_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_void_p, ctypes.c_uint]

HOST_REGISTER_DEVICEMAP = 0x2
HOST_REGISTER_READ_ONLY = 0x8

# Reads n 16-byte words with streaming loads from a grid-stride loop and folds them into one value per thread, so no load
# is optimised away; the sink is written only on a practically impossible value.
READ_KERNEL = rb"""
extern "C" __global__ void read_all(const uint4* p, long long n, unsigned* sink)
{
    unsigned acc = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        uint4 v = __ldcs(p + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) sink[0] = acc;
}
"""


def error_name(r):
    name = ctypes.c_char_p()
    cuda.cuGetErrorName(r, ctypes.byref(name))
    return name.value.decode() if name.value else str(r)


def check(r, what):
    if r != 0:
        raise SystemExit(f"{what}: {error_name(r)}")


class Gpu:
    """GPU 0's primary context, current on this thread, with its architecture and SM count."""

    def __init__(self):
        check(cuda.cuInit(0), "cuInit")
        self.device = ctypes.c_int()
        check(cuda.cuDeviceGet(ctypes.byref(self.device), 0), "cuDeviceGet")
        major, minor, sms = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, self.device)  # compute capability major
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, self.device)  # minor
        cuda.cuDeviceGetAttribute(ctypes.byref(sms), 16, self.device)    # multiprocessors
        self.arch, self.sms = f"sm_{major.value}{minor.value}", sms.value
        self.context = ctypes.c_void_p()
        check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), self.device), "cuDevicePrimaryCtxRetain")
        check(cuda.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        self.sink = self.alloc(4)

    def alloc(self, size):
        p = ctypes.c_uint64()
        check(cuda.cuMemAlloc_v2(ctypes.byref(p), size), f"cuMemAlloc({size})")
        return p.value

    def compile(self, source, name):
        """Compiles CUDA C `source` with NVRTC for this GPU and returns kernel `name`."""
        nvrtc = None
        for lib in ("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"):
            try:
                nvrtc = ctypes.CDLL(lib)
                break
            except OSError:
                pass
        if nvrtc is None:
            raise SystemExit("no NVRTC (libnvrtc.so.13/12) on the library path")
        prog = ctypes.c_void_p()
        if nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source, b"probe.cu", 0, None, None) != 0:
            raise SystemExit("nvrtcCreateProgram failed")
        opts = (ctypes.c_char_p * 2)(f"--gpu-architecture={self.arch}".encode(), b"--std=c++17")
        if nvrtc.nvrtcCompileProgram(prog, 2, opts) != 0:
            n = ctypes.c_size_t()
            nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
            log = ctypes.create_string_buffer(n.value)
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise SystemExit(log.value.decode())
        n = ctypes.c_size_t()
        nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(n))
        cubin = ctypes.create_string_buffer(n.value)
        nvrtc.nvrtcGetCUBIN(prog, cubin)
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        check(cuda.cuModuleLoadData(ctypes.byref(module), cubin), "cuModuleLoadData")
        check(cuda.cuModuleGetFunction(ctypes.byref(function), module, name.encode()), "cuModuleGetFunction")
        return function

    def time_read(self, function, device_pointer, size, grid, repeats):
        """Milliseconds per launch of the read kernel over [device_pointer, +size), after one warm-up launch."""
        words = ctypes.c_longlong(size // 16)
        p, sink = ctypes.c_uint64(device_pointer), ctypes.c_uint64(self.sink)
        args = (ctypes.c_void_p * 3)(*[ctypes.cast(ctypes.byref(a), ctypes.c_void_p) for a in (p, words, sink)])
        launch = lambda: check(cuda.cuLaunchKernel(function, grid, 1, 1, 256, 1, 1, 0, None, args, None), "cuLaunchKernel")
        launch()
        check(cuda.cuCtxSynchronize(), "warm-up")
        start, stop = ctypes.c_void_p(), ctypes.c_void_p()
        check(cuda.cuEventCreate(ctypes.byref(start), 0), "cuEventCreate")
        check(cuda.cuEventCreate(ctypes.byref(stop), 0), "cuEventCreate")
        check(cuda.cuEventRecord(start, None), "cuEventRecord")
        for _ in range(repeats):
            launch()
        check(cuda.cuEventRecord(stop, None), "cuEventRecord")
        check(cuda.cuEventSynchronize(stop), "cuEventSynchronize")
        ms = ctypes.c_float()
        check(cuda.cuEventElapsedTime(ctypes.byref(ms), start, stop), "cuEventElapsedTime")
        return ms.value / repeats

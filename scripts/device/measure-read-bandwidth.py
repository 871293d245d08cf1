#!/usr/bin/env python3
"""Measures the device-memory read bandwidth of GPU 0: the denominator of the "bandwidth bound" in docs/benchmarks.md.

Issue 5 defines the decode bound as model bytes / *measured* HBM read bandwidth (about 3.0 TB/s on the H100, against its
3.35 TB/s datasheet peak). This measures it on whatever GPU a session was lent, with nothing but the driver and NVRTC:
a kernel that reads a buffer (SIZE_MB, default 4096 MiB: far past the L2) with 16-byte loads from a grid-stride loop and
folds the words into one value per thread (so no load is optimised away), timed with CUDA events over REPEATS runs
after one warm-up, for a few block counts. Prints one line per configuration and the best.
Usage: measure-read-bandwidth.py [SIZE_MB] [REPEATS]
"""
import ctypes, sys

size = (int(sys.argv[1]) if len(sys.argv) > 1 else 4096) << 20
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 20

cuda = ctypes.CDLL("libcuda.so.1")
nvrtc = None
for name in ("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"):
    try:
        nvrtc = ctypes.CDLL(name)
        break
    except OSError:
        pass
if nvrtc is None:
    raise SystemExit("no NVRTC (libnvrtc.so.13/12) on the library path")


def check(r, what):
    if r != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(r, ctypes.byref(name))
        raise SystemExit(f"{what}: {name.value.decode() if name.value else r}")


SOURCE = rb"""
extern "C" __global__ void read_all(const uint4* p, long long n, unsigned* sink)
{
    unsigned acc = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    {
        uint4 v = __ldcs(p + i); // streaming: do not keep in L2
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) sink[0] = acc; // practically never: keeps the loads
}
"""

check(cuda.cuInit(0), "cuInit")
dev = ctypes.c_int()
check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
major, minor, sms = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
cuda.cuDeviceGetAttribute(ctypes.byref(sms), 16, dev)
ctx = ctypes.c_void_p()
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

prog = ctypes.c_void_p()
assert nvrtc.nvrtcCreateProgram(ctypes.byref(prog), SOURCE, b"read.cu", 0, None, None) == 0
arch = f"--gpu-architecture=sm_{major.value}{minor.value}".encode()
opts = (ctypes.c_char_p * 2)(arch, b"--std=c++17")
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
module, func = ctypes.c_void_p(), ctypes.c_void_p()
check(cuda.cuModuleLoadData(ctypes.byref(module), cubin), "cuModuleLoadData")
check(cuda.cuModuleGetFunction(ctypes.byref(func), module, b"read_all"), "cuModuleGetFunction")

buf, sink = ctypes.c_uint64(), ctypes.c_uint64()
cuda.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
check(cuda.cuMemAlloc_v2(ctypes.byref(buf), size), f"cuMemAlloc({size})")
check(cuda.cuMemAlloc_v2(ctypes.byref(sink), 4), "cuMemAlloc(sink)")
cuda.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]
check(cuda.cuMemsetD8_v2(buf, 1, size), "cuMemsetD8")

start, stop = ctypes.c_void_p(), ctypes.c_void_p()
check(cuda.cuEventCreate(ctypes.byref(start), 0), "cuEventCreate")
check(cuda.cuEventCreate(ctypes.byref(stop), 0), "cuEventCreate")
words = ctypes.c_longlong(size // 16)
p_buf, p_sink = ctypes.c_uint64(buf.value), ctypes.c_uint64(sink.value)
args = (ctypes.c_void_p * 3)(ctypes.cast(ctypes.byref(p_buf), ctypes.c_void_p), ctypes.cast(ctypes.byref(words), ctypes.c_void_p),
                             ctypes.cast(ctypes.byref(p_sink), ctypes.c_void_p))
print(f"GPU sm_{major.value}{minor.value}, {sms.value} SMs; reading {size >> 20} MiB, {repeats} runs per configuration", flush=True)
best = 0.0
for blocks_per_sm in (2, 4, 8, 16):
    grid = sms.value * blocks_per_sm
    launch = lambda: check(cuda.cuLaunchKernel(func, grid, 1, 1, 256, 1, 1, 0, None, args, None), "cuLaunchKernel")
    launch()
    check(cuda.cuCtxSynchronize(), "warm-up")
    check(cuda.cuEventRecord(start, None), "cuEventRecord")
    for _ in range(repeats):
        launch()
    check(cuda.cuEventRecord(stop, None), "cuEventRecord")
    check(cuda.cuEventSynchronize(stop), "cuEventSynchronize")
    ms = ctypes.c_float()
    check(cuda.cuEventElapsedTime(ctypes.byref(ms), start, stop), "cuEventElapsedTime")
    tbps = size * repeats / (ms.value / 1000) / 1e12
    best = max(best, tbps)
    print(f"  {grid} blocks x 256 threads: {tbps:.3f} TB/s ({ms.value / repeats:.3f} ms per read)", flush=True)
print(f"best read bandwidth: {best:.3f} TB/s")

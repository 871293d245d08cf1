#!/usr/bin/env python3
"""Read-only host registration measured against plain registration (issue 5, "imported buffers").

For each kind of host memory the loader can import, registers SIZE_MB of it with cuMemHostRegister, once with
DEVICEMAP | READ_ONLY (what CudaBufferProvider.TryImportHost asks for) and once with DEVICEMAP alone (its fallback), and
prints for each: the result, how long the call took, whether the device pointer equals the host pointer, and how fast
the GPU reads the registered pages over the bus (cuda_ctypes.READ_KERNEL through the device pointer, REPEATS runs).
Memory kinds: `file` = FILE mapped PROT_READ, MAP_SHARED (the loader's file mapping); `hugepages` = 2 MiB hugetlb pages,
filled, then sealed with mprotect(PROT_READ) (the loader's huge-page mode; needs a reserved pool, skipped without one);
`anonymous` = private read-write anonymous pages (populated), which plain registration can pin writable.
Usage: compare-host-register.py FILE [SIZE_MB] [REPEATS]
Conclusions (READ_ONLY is needed for read-only pages and costs nothing): docs/benchmarks.md#host-registration-probes.
"""
import ctypes, os, sys, time
from cuda_ctypes import (Gpu, READ_KERNEL, HOST_REGISTER_DEVICEMAP, HOST_REGISTER_READ_ONLY, cuda, error_name)

path = sys.argv[1]
size = (int(sys.argv[2]) if len(sys.argv) > 2 else 256) << 20
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 5

gpu = Gpu()
read_all = gpu.compile(READ_KERNEL, "read_all")
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_READ, PROT_WRITE, MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_POPULATE, MAP_HUGETLB = 1, 2, 1, 2, 0x20, 0x8000, 0x40000
MAP_FAILED = ctypes.c_void_p(-1).value


def mapping(kind):
    if kind == "file":
        fd = os.open(path, os.O_RDONLY)
        n = min(size, os.fstat(fd).st_size // 4096 * 4096)
        addr = libc.mmap(None, n, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0)
        os.close(fd)
        return addr, n
    huge = MAP_HUGETLB if kind == "hugepages" else 0
    addr = libc.mmap(None, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | huge, -1, 0)
    if addr in (None, MAP_FAILED):
        return None, 0
    ctypes.memset(addr, 1, size)
    if huge:
        libc.mprotect(addr, size, PROT_READ)  # sealed, as the loader seals it
    return addr, size


print(f"GPU {gpu.arch}; {size >> 20} MiB per registration; file {path}", flush=True)
for kind in ("file", "hugepages", "anonymous"):
    for flags, label in ((HOST_REGISTER_DEVICEMAP | HOST_REGISTER_READ_ONLY, "DEVICEMAP|READ_ONLY"), (HOST_REGISTER_DEVICEMAP, "DEVICEMAP")):
        addr, n = mapping(kind)
        if addr is None:
            print(f"  {kind:9s}: mmap failed (for hugepages: reserve {size >> 21} pages in /proc/sys/vm/nr_hugepages)", flush=True)
            break
        t = time.time()
        r = cuda.cuMemHostRegister_v2(addr, n, flags)
        ms = (time.time() - t) * 1000
        line = f"  {kind:9s} {label:19s}: "
        if r != 0:
            print(line + f"refused ({error_name(r)}) in {ms:.1f} ms", flush=True)
        else:
            dp = ctypes.c_uint64()
            cuda.cuMemHostGetDevicePointer_v2(ctypes.byref(dp), addr, 0)
            read_ms = gpu.time_read(read_all, dp.value, n, gpu.sms * 4, repeats)
            print(line + f"registered {n >> 20} MiB in {ms:.1f} ms; device pointer == host pointer: {dp.value == addr}; "
                  f"GPU reads it at {n / (read_ms / 1000) / 1e9:.1f} GB/s", flush=True)
            cuda.cuMemHostUnregister(addr)
        libc.munmap(addr, n)

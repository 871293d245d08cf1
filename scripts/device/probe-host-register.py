#!/usr/bin/env python3
"""Times cuMemHostRegister on a read-only file mapping, the registration `--gpu-host-import on` does, in chunks.

A whole-file registration of a 619 MB GGUF did not return within 70 s on an H200 (docs/bench-data/2026-11-26-h200/
import-on-file-mapping-hang.txt). This isolates the driver call from the engine: it maps FILE read-only as the loader
does (PROT_READ, MAP_PRIVATE; or MAP_SHARED with MODE=shared), registers CHUNK_MB at a time with DEVICEMAP|READ_ONLY, and prints the time of each call
and whether the device pointer equals the host pointer (then chunks registered one by one form one device range).
Usage: probe-host-register.py FILE [CHUNK_MB] [MAX_SECONDS] [private|shared]
Conclusions (why file mappings are MAP_SHARED): docs/benchmarks.md#host-registration-probes.
"""
import ctypes, os, sys, time
from cuda_ctypes import Gpu, HOST_REGISTER_DEVICEMAP, HOST_REGISTER_READ_ONLY, cuda

path = sys.argv[1]
chunk = int(sys.argv[2]) * (1 << 20) if len(sys.argv) > 2 else 64 << 20
budget = float(sys.argv[3]) if len(sys.argv) > 3 else 40.0
mode = sys.argv[4] if len(sys.argv) > 4 else "private"
Gpu()  # GPU 0's primary context, current on this thread
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size

# Map with libc so the address is known (Python's mmap object does not expose it for a read-only mapping).
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, size, 1, 2 if mode == "private" else 1, fd, 0)  # PROT_READ, MAP_PRIVATE (2) or MAP_SHARED (1)
print(f"file {path}: {size} B mapped ({mode}) at {addr:#x}; chunks of {chunk >> 20} MiB; flags DEVICEMAP|READ_ONLY", flush=True)
start = time.time()
done = 0
page = 4096
while done < size and time.time() - start < budget:
    n = min(chunk, (size - done + page - 1) // page * page)
    t = time.time()
    r = cuda.cuMemHostRegister_v2(addr + done, n, HOST_REGISTER_DEVICEMAP | HOST_REGISTER_READ_ONLY)
    dt = time.time() - t
    dp = ctypes.c_uint64()
    same = None
    if r == 0:
        cuda.cuMemHostGetDevicePointer_v2(ctypes.byref(dp), addr + done, 0)
        same = dp.value == addr + done
    print(f"  [{done >> 20:5d} MiB +{n >> 20} MiB] result {r} in {dt * 1000:8.1f} ms ({n / max(dt, 1e-9) / 1e9:.2f} GB/s); device pointer == host pointer: {same}", flush=True)
    if r != 0: break
    done += n
print(f"registered {done >> 20} MiB of {size >> 20} MiB in {time.time() - start:.1f} s", flush=True)

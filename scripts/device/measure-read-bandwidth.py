#!/usr/bin/env python3
"""Measures the device-memory read bandwidth of GPU 0: the denominator of the "bandwidth bound" in docs/benchmarks.md.

Issue 5 defines the decode bound as model bytes / *measured* HBM read bandwidth (about 3.0 TB/s on the H100, against its
3.35 TB/s datasheet peak). This measures it on whatever GPU a session was lent, with nothing but the driver and NVRTC:
cuda_ctypes.READ_KERNEL reads a buffer (SIZE_MB, default 4096 MiB: far past the L2) with 16-byte streaming loads, timed
with CUDA events over REPEATS runs after one warm-up, for a few block counts. Prints one line per configuration and the best.
Usage: measure-read-bandwidth.py [SIZE_MB] [REPEATS]
"""
import sys
from cuda_ctypes import Gpu, READ_KERNEL, check, cuda

size = (int(sys.argv[1]) if len(sys.argv) > 1 else 4096) << 20
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 20

gpu = Gpu()
read_all = gpu.compile(READ_KERNEL, "read_all")
buffer = gpu.alloc(size)
check(cuda.cuMemsetD8_v2(buffer, 1, size), "cuMemsetD8")
print(f"GPU {gpu.arch}, {gpu.sms} SMs; reading {size >> 20} MiB, {repeats} runs per configuration", flush=True)
best = 0.0
for blocks_per_sm in (2, 4, 8, 16):
    grid = gpu.sms * blocks_per_sm
    ms = gpu.time_read(read_all, buffer, size, grid, repeats)
    tbps = size / (ms / 1000) / 1e12
    best = max(best, tbps)
    print(f"  {grid} blocks x 256 threads: {tbps:.3f} TB/s ({ms:.3f} ms per read)", flush=True)
print(f"best read bandwidth: {best:.3f} TB/s")

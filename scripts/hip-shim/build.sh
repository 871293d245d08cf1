#!/usr/bin/env bash
# Builds the HIP-on-CUDA test shim (libamdhip64.so.6 + libhiprtc.so.6) into DEST (default: this folder's build/).
# Needs gcc and, at run time, the NVIDIA driver (libcuda.so.1) and NVRTC. Put DEST first on LD_LIBRARY_PATH and the HIP
# plugin loads it as ROCm 6: see docs/hip.md#the-hip-on-cuda-shim.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-$HERE/build}
mkdir -p "$DEST"
gcc -shared -fPIC -O2 -Wall -Wextra -Wno-unused-parameter -o "$DEST/libamdhip64.so.6" "$HERE/hip_on_cuda_runtime.c" -ldl
gcc -shared -fPIC -O2 -Wall -Wextra -Wno-unused-parameter -o "$DEST/libhiprtc.so.6" "$HERE/hip_on_cuda_rtc.c" -ldl
echo "built $DEST/libamdhip64.so.6 and $DEST/libhiprtc.so.6"

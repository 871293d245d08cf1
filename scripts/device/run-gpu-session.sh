#!/usr/bin/env bash
# One batch of GPU work for a lent machine with little time: conformance kit, CUDA benches (new kernels against the old
# ones, graphs on/off), the NVIDIA OpenCL rows, then run-cuda-checks.sh. Every part has its own time limit and writes
# into $OUT as it goes, so a call that runs out of time still returns what finished.
# Usage (from the folder holding .device/, built by prepare-device-bundle.sh): OUT=/results DEV=.device bash .device/run-gpu-session.sh [parts]
# parts (default all): conformance profile bench7b benchtiny opencl checks
set -uo pipefail
DEV=${DEV:-.device}
OUT=${OUT:-./out}
PARTS=${*:-conformance profile bench7b benchtiny opencl checks}
mkdir -p "$OUT"
if [ ! -x /tmp/dn/dotnet ]; then mkdir -p /tmp/dn && tar xzf "$DEV/rt.tgz" -C /tmp/dn; fi
export DOTNET_ROOT=/tmp/dn DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_TieredPGO=1
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PLUGINENGINE_CACHE=/tmp/pe-cache
# NVIDIA's OpenCL driver: register its ICD; the bundle's plugins.json then selects the platform that is NVIDIA's.
[ -f /etc/OpenCL/vendors/nvidia.icd ] || { mkdir -p /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 >/etc/OpenCL/vendors/nvidia.icd; }
PE=(/tmp/dn/dotnet "$DEV/app/pluginengine.dll")
PLUGINS=(--plugins "$DEV/app/plugins.json")
has() { [[ " $PARTS " == *" $1 "* ]]; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; lscpu | grep -m1 'Model name'; } >"$OUT/machine.txt" 2>&1

# Which OpenCL platform is NVIDIA's: `backends` lists platforms in the opencl probe line when the chosen one is not found.
"${PE[@]}" backends "${PLUGINS[@]}" >"$OUT/backends-before.txt" 2>&1
python3 - "$DEV/app/plugins.json" <<'PY'
import json, sys, ctypes
p = sys.argv[1]
cfg = json.load(open(p))
platform = 0
try:
    cl = ctypes.CDLL("libOpenCL.so.1")
    n = ctypes.c_uint(0)
    cl.clGetPlatformIDs(0, None, ctypes.byref(n))
    ids = (ctypes.c_void_p * n.value)()
    cl.clGetPlatformIDs(n.value, ids, None)
    for i in range(n.value):
        buf = ctypes.create_string_buffer(256)
        cl.clGetPlatformInfo(ctypes.c_void_p(ids[i]), 0x0902, 256, buf, None)  # CL_PLATFORM_NAME
        if b"NVIDIA" in buf.value: platform = i
except OSError:
    pass
for e in cfg["plugins"]:
    if e["name"] == "opencl": e["options"] = {"platform": platform, "device": 0}
json.dump(cfg, open(p, "w"), indent=2)
print("opencl platform", platform)
PY
"${PE[@]}" backends "${PLUGINS[@]}" >"$OUT/backends.txt" 2>&1

if has conformance; then
  # The kit runs every op and type on cuda and opencl against the CPU reference (plus the seed regression).
  timeout 240 /tmp/dn/dotnet "$DEV/app/conf/PluginEngine.Conformance.dll" -noColor -parallel none >"$OUT/conformance.txt" 2>&1
  echo "exit $?" >>"$OUT/conformance.txt"
  grep -E "Total:|FAIL|\[FAIL\]" "$OUT/conformance.txt" | head -60 >"$OUT/conformance-summary.txt"
fi

bench() { # bench LABEL TIMEOUT ARGS... → $OUT/bench-LABEL.jsonl (+ .err)
  local label=$1 limit=$2; shift 2
  timeout "$limit" "${PE[@]}" bench "${PLUGINS[@]}" "$@" -o jsonl >"$OUT/bench-$label.jsonl" 2>"$OUT/bench-$label.err"
  echo "exit $?" >>"$OUT/bench-$label.err"
}
if has profile; then
  # GPU time per kernel (CUDA events around every launch) over one pp512 + tg128 of the 7B shape.
  PLUGINENGINE_CUDA_PROFILE=1 bench profile-7b-q4_0 120 -m synthetic:llama7b:Q4_0 --backend cuda -r 1
fi
if has bench7b; then
  bench 7b-q4_0-default 150 -m synthetic:llama7b:Q4_0 --backend cuda -r 3
  PLUGINENGINE_CUDA_GRAPHS=on bench 7b-q4_0-graphs 80 -m synthetic:llama7b:Q4_0 --backend cuda -r 3
  PLUGINENGINE_CUDA_MATVEC=f32 PLUGINENGINE_CUDA_GEMM=kernels bench 7b-q4_0-oldkernels 90 -m synthetic:llama7b:Q4_0 --backend cuda -r 2 -p 128
fi
if has benchtiny; then
  bench tiny-cuda 120 -m synthetic:tinyllama:Q4_0,synthetic:tinyllama:Q8_0,synthetic:tinyllama:Q4_K_M,synthetic:tinyllama:F16 --backend cuda -r 3
  PLUGINENGINE_CUDA_GRAPHS=on bench tiny-cuda-graphs 50 -m synthetic:tinyllama:Q4_0,synthetic:tinyllama:Q4_K_M --backend cuda -r 3
fi
if has opencl; then
  bench tiny-opencl-nvidia 160 -m synthetic:tinyllama:Q8_0,synthetic:tinyllama:Q4_0 --backend opencl,cuda,cpu --gpu-host-import off,on -t 16 -r 2
fi
if has checks; then
  timeout 300 env OUT="$OUT/checks" DEV="$DEV" bash "$DEV/run-cuda-checks.sh" >"$OUT/checks.log" 2>&1
fi
echo done >"$OUT/done.txt"

#!/usr/bin/env bash
# One batch of GPU work for a lent machine with little time: the conformance kit, a kernel profile and CUDA benches
# (default kernels against the old ones, graphs on/off), the NVIDIA OpenCL rows, then run-cuda-checks.sh. Every part
# has its own time limit and appends to a few files under $OUT as it goes (a device call may return only a handful of
# files, and one that runs out of time still returns what finished):
#   summary.txt      machine, backends, conformance totals and failures, kernel profile, bench tables, checks report
#   bench.jsonl      every bench row (each row's "label" says which run it came from)
#   errors.txt       bench progress lines and errors
#   conformance.txt  the kit's full output
#   checks/          run-cuda-checks.sh's report.txt, log.txt, plans.txt
# Usage (from the folder holding .device/, built by prepare-device-bundle.sh): OUT=/results DEV=.device bash .device/run-gpu-session.sh [parts]
# parts (default all but smoke, profiletg, ab, importprobe, importbench and ncu): membw (measured read bandwidth) smoke (demo model
#   on the CPU) conformance profile profiletg bench7b nographs (graphs on, against the default off) fusion pdl ab bench7bk bench7bf16
#   benchtiny cudacpu tune depth opencl checks importprobe regflags importbench (= importtiny import7b) ncu
set -uo pipefail
DEV=${DEV:-.device}
OUT=${OUT:-./out}
PARTS=${*:-membw conformance profile bench7b nographs fusion pdl bench7bk bench7bf16 benchtiny opencl checks}
mkdir -p "$OUT"
S=$OUT/summary.txt
if [ ! -x /tmp/dn/dotnet ]; then mkdir -p /tmp/dn && tar xzf "$DEV/rt.tgz" -C /tmp/dn; fi
export DOTNET_ROOT=/tmp/dn DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_TieredPGO=1
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PLUGINENGINE_CACHE=/tmp/pe-cache
# NVIDIA's OpenCL driver: register its ICD; the bundle's plugins.json then selects the platform that is NVIDIA's.
[ -f /etc/OpenCL/vendors/nvidia.icd ] || { mkdir -p /etc/OpenCL/vendors && echo libnvidia-opencl.so.1 >/etc/OpenCL/vendors/nvidia.icd; }
PE=(/tmp/dn/dotnet "$DEV/app/pluginengine.dll")
PLUGINS=(--plugins "$DEV/app/plugins.json")
has() { [[ " $PARTS " == *" $1 "* ]]; }
{ echo "== machine"; date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv,noheader; lscpu | grep -m1 'Model name';
  echo "profilers: $(ls /usr/local/cuda/bin 2>/dev/null | grep -E '^(ncu|nsys)$' | tr '\n' ' ')"; } >>"$S" 2>&1

python3 - "$DEV/app/plugins.json" >>"$S" <<'PY'
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
{ echo "== backends"; "${PE[@]}" backends "${PLUGINS[@]}" 2>&1 | grep -E "│ (cuda|opencl|cpu) " ; } >>"$S"

if has membw; then
  # The denominator of the decode bound (issue 5: model bytes / measured HBM read bandwidth).
  { echo "== membw"; timeout -k 5 60 python3 "$DEV/measure-read-bandwidth.py" 4096 20 2>&1 | tail -6; } >>"$S"
fi

if has conformance; then
  # The kit runs every op and type on cuda and opencl against the CPU reference (plus the seed regression, whose huge-page
  # cases need a few reserved pages).
  echo 64 >/proc/sys/vm/nr_hugepages 2>/dev/null
  timeout -k 10 150 /tmp/dn/dotnet "$DEV/app/conf/PluginEngine.Conformance.Tests.dll" -noColor -parallel none >"$OUT/conformance.txt" 2>&1
  { echo "== conformance (exit $?)"; grep -E "Total:" "$OUT/conformance.txt"; grep -A6 "\[FAIL\]" "$OUT/conformance.txt" | head -80;
    grep -A1 "\[SKIP\]" "$OUT/conformance.txt" | head -20; } >>"$S"
  echo 0 >/proc/sys/vm/nr_hugepages 2>/dev/null
  # The fused ops again with CUDA's fusion off: their unfused form (the defaults' sequence of primitive ops) must pass too.
  PLUGINENGINE_CUDA_FUSION=off timeout -k 10 90 /tmp/dn/dotnet "$DEV/app/conf/PluginEngine.Conformance.Tests.dll" -noColor -parallel none \
    -class PluginEngine.Conformance.Tests.FusedOps >"$OUT/conformance-unfused.txt" 2>&1
  { echo "== conformance, fused ops with fusion off (exit $?)"; grep -E "Total:" "$OUT/conformance-unfused.txt"; grep -A6 "\[FAIL\]" "$OUT/conformance-unfused.txt" | head -40; } >>"$S"
  # The op cases again with decode attention split every 16 positions (by default from 512: only the longest cases split).
  PLUGINENGINE_CUDA_ATTENTION_CHUNK=16 timeout -k 10 90 /tmp/dn/dotnet "$DEV/app/conf/PluginEngine.Conformance.Tests.dll" -noColor -parallel none \
    -class PluginEngine.Conformance.Tests.Ops >"$OUT/conformance-split.txt" 2>&1
  { echo "== conformance, ops with attention split every 16 positions (exit $?)"; grep -E "Total:" "$OUT/conformance-split.txt"; grep -A6 "\[FAIL\]" "$OUT/conformance-split.txt" | head -40; } >>"$S"
fi

BENCH_ROWS_PY=$(cat <<'PY'
import json, sys
label, out, summary = sys.argv[1], open(sys.argv[2], "a"), open(sys.argv[3], "a")
summary.write(f"== bench {label}\n")
for line in sys.stdin:
    try: r = json.loads(line)
    except ValueError: continue
    r["label"] = label
    out.write(json.dumps(r) + "\n")
    test = f"pp{r.get('n_prompt')}" if r.get("n_prompt") else f"tg{r.get('n_gen')}"
    summary.write(f"  {r.get('model_type')} | {r.get('backends')} | {r.get('memory_mode', '')} import={r.get('host_import', '')} owned={r.get('weights_owned_bytes', 0) // 1000000}MB imported={r.get('weights_imported_bytes', 0) // 1000000}MB | {test} | "
                  f"{r.get('avg_ts', 0):.1f} ± {r.get('stddev_ts', 0):.1f} t/s | load {r.get('load_ms', 0):.0f} ms\n")
PY
)
bench() { # bench LABEL TIMEOUT ARGS...: rows appended to bench.jsonl with "label", a table to summary.txt
  local label=$1 limit=$2; shift 2
  echo "== bench $label: $*" >>"$OUT/errors.txt"
  timeout -k 10 "$limit" "${PE[@]}" bench "${PLUGINS[@]}" "$@" -o jsonl 2>>"$OUT/errors.txt" | python3 -c "$BENCH_ROWS_PY" "$label" "$OUT/bench.jsonl" "$S"
  echo "exit ${PIPESTATUS[0]}" >>"$OUT/errors.txt"
}
if has smoke; then
  bench demo-smoke 60 --backend cpu -p 16 -n 4 -r 1
fi
profile() { # profile LABEL TIMEOUT ARGS...: GPU time per kernel (CUDA events around every launch; graphs off) into summary.txt
  local label=$1; shift
  local from; from=$( (wc -l <"$OUT/errors.txt") 2>/dev/null || echo 0)
  PLUGINENGINE_CUDA_GRAPHS=off PLUGINENGINE_CUDA_PROFILE=1 bench "$label" "$@"
  { echo "== profile $label"; tail -n +"$((from + 1))" "$OUT/errors.txt" | sed -n '/cuda kernel profile/,/^exit/p' | head -32; } >>"$S"
}
if has profile; then
  # One pp512 + tg128 of the 7B shape.
  profile profile-7b-q4_0 150 -m synthetic:llama7b:Q4_0 --backend cuda -r 1
fi
if has profiletg; then
  # Decode only (tg128), fused ops on and off: which kernels a decode step spends its time in.
  profile profile-7b-q4_0-tg 60 -m synthetic:llama7b:Q4_0 --backend cuda -r 1 -p 1
  PLUGINENGINE_CUDA_FUSION=off profile profile-7b-q4_0-tg-unfused 60 -m synthetic:llama7b:Q4_0 --backend cuda -r 1 -p 1
fi
if has bench7b; then
  bench 7b-q4_0-default 120 -m synthetic:llama7b:Q4_0 --backend cuda -r 3
fi
if has tune; then
  # Kernel tuning macros (kernels.cu, option `defines`) on the decode of the 7B shape, the default first and last. TUNE
  # replaces the list: sets separated by '|', e.g. TUNE='MATVEC_UNROLL=8|MATVEC_MIN_BLOCKS=16'.
  IFS='|' read -r -a SETS <<<"${TUNE:-MATVEC_MIN_BLOCKS=16|MATVEC_UNROLL=8|MATVEC_UNROLL=2|SWIGLU_UNROLL=4|SWIGLU_UNROLL=1}"
  for d in "" "${SETS[@]}" ""; do
    PLUGINENGINE_CUDA_DEFINES="$d" bench "tune-${d:-default}" 90 -m synthetic:llama7b:Q4_0,synthetic:llama7b:Q4_K_M --backend cuda -r 3 -p 1
  done
fi
if has depth; then
  # Decode over a long history (3,840 positions in the KV cache; the 7B shape has a 4,096-token context): attention split over blocks of 512 positions (default),
  # 256 and 1024, against one block per head (0); and at depth 0 the same path either way.
  for c in 512 0 256 1024; do
    PLUGINENGINE_CUDA_ATTENTION_CHUNK=$c bench "depth-chunk-$c" 150 -m synthetic:llama7b:Q4_0 --backend cuda -r 2 -p 1 -n 128 -d 0,3840
  done
fi
if has nographs; then
  PLUGINENGINE_CUDA_GRAPHS=on bench 7b-q4_0-graphs 60 -m synthetic:llama7b:Q4_0 --backend cuda -r 3 -p 128
fi
if has fusion; then
  # The queue's fused ops (one launch for q/k/v, gate/up+SiLU, rope+KV store; projections added into the residual) against their defaults.
  PLUGINENGINE_CUDA_FUSION=off bench 7b-q4_0-unfused 90 -m synthetic:llama7b:Q4_0 --backend cuda -r 3 -p 128
fi
if has pdl; then
  # Programmatic dependent launch (sm_90+) off: every kernel waits for the previous one to finish before it is scheduled.
  PLUGINENGINE_CUDA_PDL=off bench 7b-q4_0-nopdl 90 -m synthetic:llama7b:Q4_0 --backend cuda -r 3
fi
if has ab; then
  # A/B of the decode step's switches on one machine (tg128 of the 7B shape): step graphs x programmatic launch x fused ops,
  # the default configuration again at the end to show drift.
  for cfg in "off on on" "on on on" "off off on" "on off on" "off on off" "off on on"; do
    set -- $cfg
    PLUGINENGINE_CUDA_GRAPHS=$1 PLUGINENGINE_CUDA_PDL=$2 PLUGINENGINE_CUDA_FUSION=$3 bench "ab-graphs-$1-pdl-$2-fusion-$3" 60 -m synthetic:llama7b:Q4_0 --backend cuda -r 5 -p 1
  done
fi
if has bench7bk; then
  bench 7b-q4km-q8 200 -m synthetic:llama7b:Q4_K_M,synthetic:llama7b:Q8_0 --backend cuda -r 3
fi
if has bench7bf16; then
  bench 7b-f16 200 -m synthetic:llama7b:F16 --backend cuda -r 3
fi
if has ncu && [ -x /usr/local/cuda/bin/ncu ]; then
  # Nsight Compute on one decode layer's kernels (rms, q/k/v, rope+store+attention, o+=, rms, swiglu, quantize, down+=).
  PLUGINENGINE_CUDA_GRAPHS=off PLUGINENGINE_CUDA_PDL=off timeout -k 10 240 /usr/local/cuda/bin/ncu --target-processes all \
    -k regex:'matvec_q8|swiglu_q8|attention_|rms_norm|rope_store_kv|quantize_x_q8' --launch-skip 400 --launch-count 8 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats \
    "${PE[@]}" bench "${PLUGINS[@]}" -m synthetic:llama7b:Q4_0 --backend cuda -p 1 -n 16 -r 1 >"$OUT/ncu.txt" 2>&1
  echo "== ncu (exit $?): ncu.txt, $(grep -c 'Section: GPU Speed Of Light' "$OUT/ncu.txt") kernels" >>"$S"
fi
tiny_model_file() { # the TinyLlama-shaped Q4_0 file the host-registration probes map (generated on first use)
  local f=$PLUGINENGINE_CACHE/synthetic-tinyllama-Q4_0-v2.gguf
  [ -f "$f" ] || timeout -k 10 120 "${PE[@]}" bench "${PLUGINS[@]}" -m synthetic:tinyllama:Q4_0 --backend cpu -p 8 -n 1 -r 1 >/dev/null 2>&1
  echo "$f"
}
if has importprobe; then
  # cuMemHostRegister of a read-only file mapping (what --gpu-host-import on does), timed in chunks: MAP_PRIVATE (what the
  # loader used to map) in 4 MiB chunks, then MAP_SHARED (what it maps now) in one call.
  F=$(tiny_model_file)
  { echo "== importprobe"; timeout -k 5 30 python3 "$DEV/probe-host-register.py" "$F" 4 20 private 2>&1 | tail -12; echo "exit $?";
    timeout -k 5 45 python3 "$DEV/probe-host-register.py" "$F" 619 30 shared 2>&1 | tail -5; echo "exit $?"; } >>"$S"
fi
if has regflags; then
  # cuMemHostRegister with DEVICEMAP|READ_ONLY against plain DEVICEMAP, on a file mapping, sealed huge pages and anonymous
  # pages: whether each is accepted, how long it takes, how fast the GPU then reads the pages.
  F=$(tiny_model_file)
  echo 300 >/proc/sys/vm/nr_hugepages 2>/dev/null
  { echo "== regflags"; timeout -k 5 90 python3 "$DEV/compare-host-register.py" "$F" 512 5 2>&1 | tail -12; echo "exit $?"; } >>"$S"
  echo 0 >/proc/sys/vm/nr_hugepages 2>/dev/null
fi
if has importbench || has importtiny || has import7b; then
  # Owned against imported weights (file mapping and 2 MiB huge pages; 7,000 pages hold the 7B F16 file): imported weights
  # are read over the bus by every step, so the 7B rows decode 16 tokens, not 128.
  echo 7000 >/proc/sys/vm/nr_hugepages 2>/dev/null
  echo "== huge pages reserved: $(cat /proc/sys/vm/nr_hugepages)" >>"$S"
  if has importbench || has importtiny; then
    bench import-tiny 240 -m synthetic:tinyllama:Q4_0,synthetic:tinyllama:Q8_0,synthetic:tinyllama:Q4_K_M,synthetic:tinyllama:F16 --backend cuda \
      --memory file,hugepages --gpu-host-import off,on -p 512 -n 128 -r 2
  fi
  if has importbench || has import7b; then
    bench import-7b 400 -m synthetic:llama7b:Q4_0,synthetic:llama7b:Q8_0,synthetic:llama7b:Q4_K_M,synthetic:llama7b:F16 --backend cuda \
      --memory file,hugepages --gpu-host-import off,on -p 512 -n 16 -r 1
  fi
  echo 0 >/proc/sys/vm/nr_hugepages 2>/dev/null
fi
if has benchtiny; then
  bench tiny-cuda 150 -m synthetic:tinyllama:Q4_0,synthetic:tinyllama:Q8_0,synthetic:tinyllama:Q4_K_M,synthetic:tinyllama:F16 --backend cuda -r 3
fi
if has checks; then
  timeout -k 10 240 env OUT="$OUT/checks" DEV="$DEV" bash "$DEV/run-cuda-checks.sh" >/dev/null 2>&1
  { echo "== checks (exit $?)"; cat "$OUT/checks/report.txt"; } >>"$S"
fi
if has cudacpu; then
  # The issue's "bench --backend cuda,cpu": both backends in one command, one table.
  bench tiny-cuda-cpu 200 -m synthetic:tinyllama:Q4_0 --backend cuda,cpu -t 16 -r 2
fi
if has opencl; then
  # OpenCL owned vs imported (import on a discrete GPU reads weights over PCIe), then the CPU row beside it.
  bench tiny-opencl-nvidia 200 -m synthetic:tinyllama:Q8_0,synthetic:tinyllama:Q4_0 --backend opencl --gpu-host-import off,on -r 2
  bench tiny-cpu 100 -m synthetic:tinyllama:Q8_0,synthetic:tinyllama:Q4_0 --backend cpu -t 16 -r 2
fi
echo "== done $(date -u)" >>"$S"

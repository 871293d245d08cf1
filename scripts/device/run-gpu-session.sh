#!/usr/bin/env bash
# One batch of GPU work for a lent machine: correctness through the conformance kit and `pluginengine conformance` (the same
# code on every machine and for every backend), then the benches the project's numbers come from. Every part has its own
# time limit and appends to a few files under $OUT as it goes:
#   summary.txt      machine, backends, conformance totals and failures, model checks, bench tables
#   bench.jsonl      every bench row (each row's "label" says which run it came from)
#   errors.txt       bench progress lines and errors
#   conformance.txt  the kit's full output
# Usage (from the folder holding .device/, built by prepare-device-bundle.sh): OUT=/results DEV=.device bash .device/run-gpu-session.sh [parts]
# parts (default: all but split): conformance bench7b bench7bk benchtiny batch split. Profiling, tuning and host-registration probes of earlier
# sessions are in git history (before issue 15); their results are in docs/benchmarks.md.
set -uo pipefail
DEV=${DEV:-.device}
OUT=${OUT:-./out}
PARTS=${*:-conformance bench7b bench7bk benchtiny batch}
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


if has conformance; then
  # The kit: every op and type of each GPU backend against the CPU reference, the fused ops, the buffer contract and the
  # seed regression (its huge-page cases need a few reserved pages).
  echo 64 >/proc/sys/vm/nr_hugepages 2>/dev/null
  timeout -k 10 150 /tmp/dn/dotnet "$DEV/app/conf/PluginEngine.Conformance.Tests.dll" -noColor -parallel none >"$OUT/conformance.txt" 2>&1
  { echo "== conformance kit (exit $?)"; grep -E "Total:" "$OUT/conformance.txt"; grep -A6 "\[FAIL\]" "$OUT/conformance.txt" | head -80;
    grep -A1 "\[SKIP\]" "$OUT/conformance.txt" | head -20; } >>"$S"
  echo 0 >/proc/sys/vm/nr_hugepages 2>/dev/null
  # Whole models against the CPU: logits of every generated weight type with all layers and with -ngl 1, and the seed
  # regression with clean and dirty padding gaps (what run-cuda-checks.sh did by hand).
  # A backend that is not available here exits 2 with the reason (the plugin's probe), which the summary keeps.
  for b in cuda hip opencl; do
    { echo "== pluginengine conformance --backend $b"; timeout -k 10 300 "${PE[@]}" conformance "${PLUGINS[@]}" --backend "$b" \
        --types f32,f16,q8_0,q4_0,q4_k,q6_k,q4_k_m 2>&1; echo "exit $?"; } >>"$S"
  done
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
    test = r.get("test") or (f"pp{r.get('n_prompt')}" if r.get("n_prompt") else f"tg{r.get('n_gen')}")
    if r.get("n_sequences"): test += f" ({r.get('avg_ts_per_sequence', 0):.1f} t/s per sequence)"
    summary.write(f"  {r.get('model_type')} | {r.get('backends')} | {r.get('memory_mode', '')} import={r.get('host_import', '')} owned={r.get('weights_owned_bytes', 0) // 1000000}MB imported={r.get('weights_imported_bytes', 0) // 1000000}MB | {test} | "
                  f"{r.get('avg_ts', 0):.1f} ± {r.get('stddev_ts', 0):.1f} t/s | load {r.get('load_ms', 0):.0f} ms"
                  + (f" | split {r.get('split_mode')} {r.get('tensor_split') or 'free-memory'} on {r.get('split_devices')} devices, "
                     f"{r.get('device_copies')} copies/rep {r.get('device_transfers', '')}" if r.get('split_devices', 1) > 1 or r.get('split_mode') == 'none' else "")
                  + "\n")
PY
)
bench() { # bench LABEL TIMEOUT ARGS...: rows appended to bench.jsonl with "label", a table to summary.txt
  local label=$1 limit=$2; shift 2
  echo "== bench $label: $*" >>"$OUT/errors.txt"
  timeout -k 10 "$limit" "${PE[@]}" bench "${PLUGINS[@]}" "$@" -o jsonl 2>>"$OUT/errors.txt" | python3 -c "$BENCH_ROWS_PY" "$label" "$OUT/bench.jsonl" "$S"
  echo "exit ${PIPESTATUS[0]}" >>"$OUT/errors.txt"
}
if has bench7b; then
  bench 7b-q4_0-default 120 -m synthetic:llama7b:Q4_0 --backend cuda -r 3
fi
if has bench7bk; then
  bench 7b-q4km-q8 200 -m synthetic:llama7b:Q4_K_M,synthetic:llama7b:Q8_0 --backend cuda -r 3
fi
if has benchtiny; then
  bench tiny-cuda 150 -m synthetic:tinyllama:Q4_0,synthetic:tinyllama:Q8_0,synthetic:tinyllama:Q4_K_M,synthetic:tinyllama:F16 --backend cuda -r 3
fi
if has split; then
  # Issue 19 (docs/multi-gpu.md#what-was-run-and-what-is-left): the GPU as two virtual CUDA devices (own contexts and streams), so placement,
  # copies between devices (cuMemcpyPeerAsync) and teardown run for real on one GPU. Each command gets its own limit.
  export PLUGINENGINE_CUDA_VIRTUAL_DEVICES=2
  { echo "== split: backends with virtual_devices 2"; "${PE[@]}" backends "${PLUGINS[@]}" 2>&1 | grep -E "│ cuda " ; } >>"$S"
  # Logits split 1:1 over the two devices against one device, per weight type (the conformance command's split check),
  # next to the usual checks against the CPU.
  { echo "== split: pluginengine conformance --backend cuda (virtual_devices 2)"; timeout -k 10 200 "${PE[@]}" conformance "${PLUGINS[@]}" \
      --backend cuda --types f16,q8_0,q4_0,q4_k_m 2>&1; echo "exit $?"; } >>"$S"
  # One generation split 1:1: the header shows each device's layers and bytes, the summary the copies per device pair.
  { echo "== split: run --split-mode layer --tensor-split 1,1"; timeout -k 10 60 "${PE[@]}" run "${PLUGINS[@]}" --backend cuda \
      --split-mode layer --tensor-split 1,1 -n 32 -p "Once upon a time" 2>&1 | grep -vE "^note: (this model|preferred)"; echo "exit $?"; } >>"$S"
  # 7B-shaped Q4_0: one device (split mode none) against the split 1:1, one repetition each.
  bench 7b-q4_0-split 150 -m synthetic:llama7b:Q4_0 --backend cuda -sm none,layer -ts 1/1 -r 1 -p 512 -n 128
  unset PLUGINENGINE_CUDA_VIRTUAL_DEVICES
fi
if has batch; then
  # Continuous batching (docs/batching.md): 8 concurrent greedy requests on CUDA must each equal the request sent alone
  # (PASS/FAIL line), then aggregate decode t/s with 1, 4, 16 and 64 sequences decoding together on the 7B-shaped model
  # (generated into $PLUGINENGINE_CACHE by bench7b when that ran first; about a minute otherwise).
  { echo "== pluginengine conformance --backend cuda --batching"; timeout -k 10 120 "${PE[@]}" conformance "${PLUGINS[@]}" --backend cuda --batching 2>&1; echo "exit $?"; } >>"$S"
  # With batch_invariant on the batched tokens must be the same bits as alone: no near-tie allowance (docs/batching.md).
  { echo "== pluginengine conformance --backend cuda --batching --exact (batch_invariant on)"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout -k 10 120 "${PE[@]}" conformance "${PLUGINS[@]}" --backend cuda --batching --exact 2>&1; echo "exit $?"; } >>"$S"
  bench 7b-q4_0-parallel 240 -m synthetic:llama7b:Q4_0 --backend cuda --parallel 1,4,16,64 -n 32 -r 2
fi
echo "== done $(date -u)" >>"$S"

#!/usr/bin/env bash
# Runs the HIP plugin on an NVIDIA GPU through the HIP-on-CUDA shim (this folder), with the bundle that
# scripts/device/prepare-device-bundle.sh builds (it ships plugins/hip and this folder as DEV/hip-shim):
#   1. builds the shim (gcc) and puts it first on LD_LIBRARY_PATH: the HIP plugin then loads it as ROCm 6;
#   2. `backends`: cuda and hip both loaded on the same GPU;
#   3. the conformance kit (every non-CPU backend of plugins.json: cuda and hip) against the CPU backend;
#   4. logits of hip against cuda (same kernels from the HIP and CUDA dialects of the one source; CUDA's prompt GEMM
#      set to the plugin's kernels, as HIP has no BLAS): expected bit-identical, batched and one token;
#   5. the seed regression on hip: read-only file mapping, --host-import on (discrete: forced, logged), import
#      against owned logits (expected bit-identical), on a Q4_K_M model with ne0 % 512 != 0;
#   6. a short bench of both (tokens/s on the shim say nothing about an AMD GPU; they show the binding adds no stall).
# Usage (from the folder holding DEV): OUT=/results DEV=.device bash .device/hip-shim/run-hip-on-cuda.sh [part ...]
# Parts: backends conformance logits seed bench (default: all). Writes OUT/hip-summary.txt and OUT/hip-conformance.txt.
set -uo pipefail
DEV=${DEV:-.device}
OUT=${OUT:-./out}
PARTS=${*:-backends conformance logits seed bench}
has() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$OUT"
S=$OUT/hip-summary.txt
LOG=$OUT/hip-log.txt
if [ ! -x /tmp/dn/dotnet ]; then mkdir -p /tmp/dn && tar xzf "$DEV/rt.tgz" -C /tmp/dn; fi
export DOTNET_ROOT=/tmp/dn DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_TieredPGO=1 PLUGINENGINE_CACHE=/tmp/pe-cache
{ echo "== machine"; date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; } >>"$S" 2>&1
{ echo "== shim"; bash "$DEV/hip-shim/build.sh" /tmp/hipshim; } >>"$S" 2>&1
export LD_LIBRARY_PATH=/tmp/hipshim:/usr/local/nvidia/lib64:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# A huge page pool so the kit's hugepages + import cases run (root on the GPU machine; best effort).
[ "$(cat /proc/sys/vm/nr_hugepages)" -ge 256 ] || echo 256 >/proc/sys/vm/nr_hugepages 2>/dev/null
PE=(/tmp/dn/dotnet "$DEV/app/pluginengine.dll")
PLUGINS=(--plugins "$DEV/app/plugins.json")
run() { echo "\$ $*" >>"$LOG"; "$@" >>"$LOG" 2>&1; local rc=$?; echo "[exit $rc]" >>"$LOG"; return $rc; }

if has backends; then
  { echo "== backends"; timeout -k 5 120 "${PE[@]}" backends "${PLUGINS[@]}" -v 2>&1 | tee -a "$LOG" | grep -E "(cuda|hip|cpu) " | head -12; } >>"$S"
fi
if has conformance; then
  timeout -k 10 330 /tmp/dn/dotnet "$DEV/app/conf/PluginEngine.Conformance.dll" -noColor -parallel none >"$OUT/hip-conformance.txt" 2>&1
  { echo "== conformance, cuda and hip (exit $?)"; grep -E "Total:" "$OUT/hip-conformance.txt";
    grep -A8 "\[FAIL\]" "$OUT/hip-conformance.txt" | head -120; grep -A1 "\[SKIP\]" "$OUT/hip-conformance.txt" | grep -i hip | head -20; } >>"$S"
fi
M=/tmp/pe-models L=/tmp/pe-logits
mkdir -p "$M" "$L"
TOKENS=1,450,300,20,99,1000,7,8,2048,4000,13,77,512,600,3100,42,5,900,1234,2222,31,64,128,256,1024,3,999,4095,17,18,19,20
same() { # same LABEL A B: bit-identical, or the max |diff|
  if cmp -s "$2" "$3"; then echo "$1: bit-identical ($(stat -c %s "$2") B)"; else
    python3 - "$1" "$2" "$3" <<'PY'
import array, sys
x = array.array('f'); y = array.array('f')
x.frombytes(open(sys.argv[2], 'rb').read()); y.frombytes(open(sys.argv[3], 'rb').read())
if len(x) != len(y) or not x: print(f"{sys.argv[1]}: size mismatch {len(x)} vs {len(y)}"); sys.exit()
print(f"{sys.argv[1]}: differ, max|diff| {max(abs(a - b) for a, b in zip(x, y)):.3e}, max|a| {max(abs(a) for a in x):.3e}")
PY
  fi
}
if has logits || has seed; then
  run /tmp/dn/dotnet "$DEV/modelgen/modelgen.dll" "$M" compare
fi
if has logits; then
  echo "== logits: hip (shim) vs cuda, same kernels (CUDA prompt GEMM on the plugin's kernels)" >>"$S"
  for n in f16 q8_0 q4_0 q4_k_m q5_k; do
    f=$M/cmp-$n.gguf
    run "${PE[@]}" logits "${PLUGINS[@]}" -m "$f" --tokens "$TOKENS" --all-positions --backend hip -o "$L/$n-hip.bin"
    run env PLUGINENGINE_CUDA_GEMM=kernels "${PE[@]}" logits "${PLUGINS[@]}" -m "$f" --tokens "$TOKENS" --all-positions --backend cuda -o "$L/$n-cuda.bin"
    same "$n, 32 tokens in one batch" "$L/$n-hip.bin" "$L/$n-cuda.bin" >>"$S"
    run "${PE[@]}" logits "${PLUGINS[@]}" -m "$f" --tokens 450 --backend hip -o "$L/$n-1-hip.bin"
    run "${PE[@]}" logits "${PLUGINS[@]}" -m "$f" --tokens 450 --backend cuda -o "$L/$n-1-cuda.bin"
    same "$n, one token (int8 mat-vec)" "$L/$n-1-hip.bin" "$L/$n-1-cuda.bin" >>"$S"
  done
fi
if has seed; then
  echo "== seed regression on hip: read-only file mapping, --host-import on" >>"$S"
  for n in seed-q4_k_m-a4096 seed-q4_k_m-dirty; do
    f=$M/$n.gguf
    run "${PE[@]}" logits "${PLUGINS[@]}" -m "$f" --tokens "$TOKENS" --all-positions --backend hip --host-import on -v -o "$L/$n-import.bin"
    grep -iE "import" "$LOG" | grep -i hip | tail -3 >>"$S"
    run "${PE[@]}" logits "${PLUGINS[@]}" -m "$f" --tokens "$TOKENS" --all-positions --backend hip --host-import off -o "$L/$n-owned.bin"
    same "$n: import vs owned" "$L/$n-import.bin" "$L/$n-owned.bin" >>"$S"
  done
fi
if has bench; then
  { echo "== bench (shim: hip = the HIP plugin's bindings over CUDA; no cuBLAS, no PDL on hip)";
    timeout -k 5 150 "${PE[@]}" bench "${PLUGINS[@]}" -m synthetic:tinyllama:Q4_0 --backend cuda,hip -p 128 -n 64 -r 2 2>&1 | tail -12; } >>"$S"
fi
echo "== done $(date -u)" >>"$S"

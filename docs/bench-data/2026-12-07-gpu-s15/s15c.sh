#!/bin/bash
# Session 15, the one call device time allowed after an hour of failed machine starts (s15a.sh and s15b.sh, prepared
# first, never ran): step graphs (graphs on: recorded and replayed graphs) checked with the kit's cases and the batching
# check, then measured against direct launches with PLUGINENGINE_CUDA_PROFILE=host; 1 and 16 sequences of 7B Q4_0
# (issue 14) with the defaults, graphs on and ATTENTION_ROWS_P=4; then, on an H200, issue 17's table beside llama.cpp
# c392e50 (built in the background meanwhile; -fa 1, its faster setting in every row of session 12).
set -u
MODELS="tinyllama:Q4_0 llama7b:Q4_0 tinyllama:F16 llama7b:Q4_K_M"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader)
case "$GPU" in *H200*) ;; *) NO_LLAMA=1 ;; esac
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; grep -m1 "model name" /proc/cpuinfo; } >>$S 2>&1
start_background
B=$OUT/bench.txt
left() { [ $(( $(date +%s) - T0 )) -lt $(( $1 * ${LIMIT:-500} / 500 )) ]; }
pe() { left 500 || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "host profile|rror|step graphs off" $OUT/last.err >>$B; el >>$B; }
{ echo "== kit MatMul, Attention, Segment cases with graphs on"; PLUGINENGINE_CUDA_GRAPHS=on PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 70 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none -method "*MatMul*" -method "*Attention*" -method "*Segment*" 2>&1 | grep -E "Total:|\[FAIL\]|step graphs off" -A4 | head -20; el
  echo "== batching, graphs on"; PLUGINENGINE_CUDA_GRAPHS=on timeout 40 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL|passed|failed|rror|step graphs" | tail -5; el
  echo "== batching exact, batch_invariant on, graphs on"; PLUGINENGINE_CUDA_GRAPHS=on PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 40 $D/pe conformance --backend cuda --batching --exact 2>&1 | grep -E "batch|PASS|FAIL|step graphs" | tail -3; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
T=synthetic:tinyllama:Q4_0; M7=synthetic:llama7b:Q4_0
for m in $T $M7 synthetic:tinyllama:F16; do for g in off on; do
  pe PLUGINENGINE_CUDA_PROFILE=host PLUGINENGINE_CUDA_GRAPHS=$g $D/pe bench -m $m --backend cuda -p 1 -n 128 -r 3
done; done
pe PLUGINENGINE_CUDA_GRAPHS=on PLUGINENGINE_CUDA_SWIGLU_QUANTIZE=on $D/pe bench -m $T --backend cuda -p 1 -n 128 -r 3
pe $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
pe PLUGINENGINE_CUDA_GRAPHS=on $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
pe PLUGINENGINE_CUDA_DEFINES=ATTENTION_ROWS_P=4 $D/pe bench -m $M7 --backend cuda --parallel 16 -n 64 -r 2
if [ -z "${NO_LLAMA:-}" ]; then
  for m in $MODELS; do pe $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 128 -r 3; done
  while [ ! -e /tmp/llama.done ] && left 420; do sleep 3; done
  cat /tmp/llama.done >>$S 2>&1
  F=""; for m in $MODELS; do F="$F -m $(model_file ${m%%:*} ${m##*:})"; done
  echo "files:$F" >>$S
  left 470 && { echo "== llama-bench"; timeout 90 /tmp/llama.cpp/build/bin/llama-bench $F -p 512 -n 128 -r 3 -ngl 99 -fa 1 -o md 2>>$OUT/err.txt; el; } >>$B
fi
cat $B >>$S

#!/bin/bash
# Session 18, call 2: the new defaults of kernels.cu after call 1 (PDL_EARLY_TRIGGER=1, ATTENTION_PREFETCH_STEPS=1,
# Q4K_WIDE_LOADS=1; the L2 prefetch of the mat-vecs' weights removed) checked by the kit and the model checks, then
# issue 17's decode rows and 7B at depth 4,096 against the same build with the three switches off (the old code).
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16 llama7b:Q4_0:8192"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
start_background
B=$OUT/bench.txt
OLD="PDL_EARLY_TRIGGER=0;ATTENTION_PREFETCH_STEPS=0;Q4K_WIDE_LOADS=0"
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left 330 || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
{ echo "== kit MatMul/Attention/Decode/Rope cases, defaults"
  env PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 80 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*MatMul*" -method "*Attention*" -method "*Decode*" -method "*Rope*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -40; el
  echo "== conformance (model checks)"; timeout 60 $D/pe conformance --backend cuda 2>&1 | tail -8; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
for v in "" "$OLD" ""; do for m in llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16; do
  pe PLUGINENGINE_CUDA_DEFINES="$v" $D/pe bench -m synthetic:$m --backend cuda -p 0 -n 128 -r 5; done; done
for v in "" "$OLD"; do pe PLUGINENGINE_CUDA_DEFINES="$v" $D/pe bench -m synthetic:llama7b:Q4_0:8192 --backend cuda -p 0 -n 64 -d 0,4096 -r 2; done
for m in llama7b:Q4_0 llama7b:Q4_K_M; do pe X=1 $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 0 -r 3; done
cat $B >>$S

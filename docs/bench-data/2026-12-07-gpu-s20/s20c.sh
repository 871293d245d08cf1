#!/bin/bash
# Session 20, call 2 (after s20b.sh passed the kit): the preload A/B again, on all three decode shapes, alternating.
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
start_background
B=$OUT/bench.txt
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left ${GUARD:-230} || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
ON="MATVEC_PRELOAD=2;SWIGLU_PRELOAD=2"
while [ ! -e /tmp/models.done ]; do sleep 2; left 200 || break; done; cat /tmp/models.done >>$S 2>/dev/null
for m in llama7b:Q4_K_M tinyllama:Q4_0 llama7b:Q4_0; do
  for v in "$ON" "" "$ON" ""; do pe PLUGINENGINE_CUDA_DEFINES="$v" $D/pe bench -m synthetic:$m --backend cuda -p 0 -n 128 -r 4; done; done
cat $B >>$S

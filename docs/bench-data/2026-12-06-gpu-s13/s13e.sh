#!/bin/bash
# Session 13, call 3 (s13d.sh cut down to what the remaining device time allows): a batch's rms_norm on several blocks a row
# (rms_norm_q8_row with the rows in grid y) against commit 0d7021b's plugin (.device/app/plugins/cuda-base): the kit's
# RmsNorm and segment cases, the logits and batching checks, then 1 and 16 sequences, new then old.
set -u
MODELS="llama7b:Q4_0"; NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
B=$OUT/bench.txt
pe() { [ $(( $(date +%s) - T0 )) -gt 170 ] && { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$B; el >>$B; }
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 90 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -40; }
{ echo "== kit: RmsNorm, segments"; kit -method "*RmsNorm*" -method "*Segment*"; el
  echo "== conformance + batching"; timeout 60 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL|passed|failed" | tail -20; el
  echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 60 $D/pe conformance --backend cuda --batching --exact 2>&1 | grep -E "batch|PASS|FAIL" | tail -6; el
} >>$S
while [ ! -e /tmp/models.done ]; do sleep 3; done
M7=synthetic:llama7b:Q4_0
for i in 1; do
  pe $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
  pe $BASE $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
done
cat $B >>$S

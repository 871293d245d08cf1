#!/bin/bash
# Session 13, call 3: matvec_wide removed; a batch's rms_norm on several blocks a row (rms_norm_q8_row with the rows in grid
# y). The kit's cases that these kernels serve (cuda), its matmul, segment and RmsNorm cases with mma on 2..512 tokens, the logits and batching checks,
# then 1 and 16 sequences against the previous commit's plugin (alternating), the curve, and the 16-sequence kernel profile.
set -u
MODELS="llama7b:Q4_0"; NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
B=$OUT/bench.txt
pe() { [ $(( $(date +%s) - T0 )) -gt 300 ] && { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$B; el >>$B; }
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 200 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -40; }
{ echo "== kit: RmsNorm, matmuls, segments, attention"; kit -method "*RmsNorm*" -method "*MatMul*" -method "*Segment*" -method "*Attention*"; el
  echo "== kit matmuls, segments, RmsNorm with mma on 2..512 tokens"; PLUGINENGINE_CUDA_MMA_MIN_TOKENS=2 PLUGINENGINE_CUDA_MMA_MAX_TOKENS=512 kit -method "*MatMul*" -method "*Segment*" -method "*RmsNorm*"; el
  echo "== conformance + batching"; timeout 150 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL|passed|failed" | tail -20; el
  echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 100 $D/pe conformance --backend cuda --batching --exact 2>&1 | grep -E "batch|PASS|FAIL" | tail -6; el
} >>$S
while [ ! -e /tmp/models.done ]; do sleep 3; done
M7=synthetic:llama7b:Q4_0
for i in 1 2; do
  pe $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
  pe $BASE $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
done
pe $D/pe bench -m $M7 --backend cuda --parallel 1,4,16,64 -n 64 -r 2
pe $D/pe bench -m $M7 --backend cuda -p 512 -n 128 -r 3
[ $(( $(date +%s) - T0 )) -lt 320 ] && { echo "== profile, 16 sequences"; PLUGINENGINE_CUDA_PROFILE=1 timeout 40 $D/pe bench -m $M7 --backend cuda --parallel 16 -n 32 -r 1 2>&1 | grep -vE "^\\| *(model|---)" | head -40; el; } >>$OUT/profile.txt
cat $B >>$S

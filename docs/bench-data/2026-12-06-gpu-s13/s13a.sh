#!/bin/bash
# Session 13, call 1: the batch fusions (rms_norm, attention rows and silu_mul quantize for the int8 batch matmuls; q/k/v and
# gate/up in one mmq launch) and the Q4_0 mat-vec on 16-byte loads (matvec_wide). Correctness first (the kit for cuda, its
# matmul cases with mma on 2..512 tokens and with matvec_wide off; the logits and batching checks), then A/B benches against
# the previous commit's CUDA plugin (.device/app/plugins/cuda-base, selected by plugins-base.json) in the same call.
set -u
MODELS="llama7b:Q4_0 tinyllama:Q4_0 llama7b:Q4_K_M"
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
B=$OUT/bench.txt
pe() { [ $(( $(date +%s) - T0 )) -gt 480 ] && { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>>$OUT/err.txt | grep -E "^\| synthetic|^\| *[0-9]" >>$B; el >>$B; }
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 200 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -40; }
{ echo "== kit, every case"; kit; el
  echo "== kit matmuls, segments, RmsNorm with mma on 2..512 tokens"; PLUGINENGINE_CUDA_MMA_MIN_TOKENS=2 PLUGINENGINE_CUDA_MMA_MAX_TOKENS=512 kit -method "*MatMul*" -method "*Segment*" -method "*RmsNorm*"; el
  echo "== kit matmuls, matvec_wide off"; PLUGINENGINE_CUDA_MATVEC_WIDE=off kit -method "*MatMul*"; el
  echo "== conformance + batching"; timeout 150 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL|passed|failed" | tail -20; el
  echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 100 $D/pe conformance --backend cuda --batching --exact 2>&1 | grep -E "batch|PASS|FAIL" | tail -6; el
} >>$S
while [ ! -e /tmp/models.done ]; do sleep 3; done
echo "models: $(cat /tmp/models.done)" >>$S
M7=synthetic:llama7b:Q4_0; MT=synthetic:tinyllama:Q4_0
for m in $M7 $MT synthetic:llama7b:Q4_K_M; do
  pe $D/pe bench -m $m --backend cuda -p 1 -n 128 -r 3
  pe PLUGINENGINE_CUDA_MATVEC_WIDE=off $D/pe bench -m $m --backend cuda -p 1 -n 128 -r 3
  pe $BASE $D/pe bench -m $m --backend cuda -p 1 -n 128 -r 3
done
pe $D/pe bench -m $M7 --backend cuda --parallel 1,4,16,64 -n 64 -r 2
pe $BASE $D/pe bench -m $M7 --backend cuda --parallel 1,4,16,64 -n 64 -r 2
pe $D/pe bench -m $M7 --backend cuda --parallel 16 -n 64 -r 2
pe $BASE $D/pe bench -m $M7 --backend cuda --parallel 16 -n 64 -r 2
pe $D/pe bench -m $M7 --backend cuda -p 1 -n 64 -d 0,2048,3968 -r 2
[ $(( $(date +%s) - T0 )) -lt 500 ] && { echo "== profile, 16 sequences"; PLUGINENGINE_CUDA_PROFILE=1 timeout 40 $D/pe bench -m $M7 --backend cuda --parallel 16 -n 32 -r 1 2>&1 | grep -vE "^\| *(model|---)" | head -60; el; } >>$OUT/profile.txt
cat $B >>$S
echo "llama.cpp: $(cat /tmp/llama.done 2>/dev/null || echo 'still building')" >>$S
L=/tmp/llama.cpp/build/bin
if grep -q "exit 0" /tmp/llama.done 2>/dev/null && [ $(( $(date +%s) - T0 )) -lt 530 ]; then
  { echo "== llama-bench 7B Q4_0"; timeout 50 $L/llama-bench -m $(model_file llama7b Q4_0) -p 512 -n 128 -r 2 -ngl 99 -fa 1 -o md 2>>$OUT/err.txt; el; } >>$S
fi

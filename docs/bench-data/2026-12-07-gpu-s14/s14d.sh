#!/bin/bash
# Session 14, call 1 (cut down to the device time left after an hour of failed machine starts; one H100): a
# batch's rms_norm on several blocks a row, the decode SwiGLU mat-vec quantizing its own output (swiglu_quantize), the F16
# decode mat-vec with its chunks unrolled (MATMUL_T1_UNROLL). Correctness first (the kit's matmul, norm, rope, attention and
# segment cases; the logits and batching checks), then A/B benches against the previous commit's CUDA plugin
# (.device/app/plugins/cuda-base, selected by plugins-base.json). No llama.cpp, no issue-17 table.
set -u
MODELS="llama7b:Q4_0 tinyllama:Q4_0 tinyllama:F16"; NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
B=$OUT/bench.txt
pe() { [ $(( $(date +%s) - T0 )) -gt 330 ] && { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$B; el >>$B; }
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 120 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -40; }
{ echo "== kit: MatMul, RmsNorm, Rope, Attention, Segment cases"; kit -method "*MatMul*" -method "*RmsNorm*" -method "*Rope*" -method "*Attention*" -method "*Segment*"; el
  echo "== kit SwiGlu/MatMulAdd with MATMUL_T1_UNROLL=4, swiglu_quantize off"; PLUGINENGINE_CUDA_DEFINES=MATMUL_T1_UNROLL=4 PLUGINENGINE_CUDA_SWIGLU_QUANTIZE=off kit -method "*MatMul*"; el
  echo "== conformance + batching"; timeout 60 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL|passed|failed" | tail -20; el
  echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 60 $D/pe conformance --backend cuda --batching --exact 2>&1 | grep -E "batch|PASS|FAIL" | tail -6; el
} >>$S
while [ ! -e /tmp/models.done ]; do sleep 3; done
echo "models: $(cat /tmp/models.done)" >>$S
M7=synthetic:llama7b:Q4_0; MT=synthetic:tinyllama:Q4_0; MF=synthetic:tinyllama:F16
for i in 1 2; do
  pe $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
  pe $BASE $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
done
for m in $M7 $MT; do
  pe $D/pe bench -m $m --backend cuda -p 1 -n 128 -r 3
  pe PLUGINENGINE_CUDA_SWIGLU_QUANTIZE=off $D/pe bench -m $m --backend cuda -p 1 -n 128 -r 3
  pe $BASE $D/pe bench -m $m --backend cuda -p 1 -n 128 -r 3
done
for u in 1 4 2; do pe PLUGINENGINE_CUDA_DEFINES=MATMUL_T1_UNROLL=$u $D/pe bench -m $MF --backend cuda -p 1 -n 128 -r 3; done
cat $B >>$S

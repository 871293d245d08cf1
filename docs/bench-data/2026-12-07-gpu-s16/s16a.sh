#!/bin/bash
# Session 16, call 2: the q/k/v mat-vec that rotates and stores k, v in its epilogue (MatMulRopeAndStoreKv, API 1.3) and the
# fused decode mat-vecs on F16 weights (F32 activations: several targets, accumulation, SwiGLU, RoPE in one launch each) checked
# with the kit's fused-op, segment and matmul cases, the batching checks and the model checks, then measured: both off (the
# launches of commit 2c438f0), qkv_rope on, and (F16) both on. About 7 minutes with model generation.
set -u
MODELS="tinyllama:Q4_0 tinyllama:F16 llama7b:Q4_0 llama7b:Q4_K_M"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; grep -m1 "model name" /proc/cpuinfo; } >>$S 2>&1
start_background
B=$OUT/bench.txt
OFF="PLUGINENGINE_CUDA_QKV_ROPE=off PLUGINENGINE_CUDA_PLAIN_FUSION=off"
ROPE="PLUGINENGINE_CUDA_QKV_ROPE=on PLUGINENGINE_CUDA_PLAIN_FUSION=off"
ON="PLUGINENGINE_CUDA_QKV_ROPE=on PLUGINENGINE_CUDA_PLAIN_FUSION=on"
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left 420 || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "host profile|rror|step graphs off" $OUT/last.err >>$B; el >>$B; }
export PLUGINENGINE_CUDA_PLAIN_FUSION=on PLUGINENGINE_CUDA_QKV_ROPE=on # what is checked and measured, whatever the defaults
{ echo "== kit FusedOps, SegmentOps and MatMul cases"; PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 150 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none -method "*FusedOps*" -method "*SegmentOps*" -method "*MatMul*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -40; el
  echo "== batching"; timeout 40 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL|passed|failed|rror" | tail -5; el
  echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 40 $D/pe conformance --backend cuda --batching --exact 2>&1 | grep -E "batch|PASS|FAIL" | tail -3; el
  echo "== conformance (model checks)"; timeout 60 $D/pe conformance --backend cuda 2>&1 | tail -8; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
T=synthetic:tinyllama:Q4_0; TF=synthetic:tinyllama:F16; M7=synthetic:llama7b:Q4_0; K7=synthetic:llama7b:Q4_K_M
for m in $T $TF $M7 $K7; do for v in OFF ROPE; do pe ${!v} PLUGINENGINE_CUDA_PROFILE=host $D/pe bench -m $m --backend cuda -p 0 -n 128 -r 3; done; done
for m in $TF $T $TF; do for v in OFF ON; do pe ${!v} $D/pe bench -m $m --backend cuda -p 0 -n 128 -r 3; done; done
pe $ON PLUGINENGINE_CUDA_GRAPHS=on PLUGINENGINE_CUDA_PROFILE=host $D/pe bench -m $T --backend cuda -p 0 -n 128 -r 3
pe $ON PLUGINENGINE_CUDA_SWIGLU_QUANTIZE=on $D/pe bench -m $T --backend cuda -p 0 -n 128 -r 3
pe $ON $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
cat $B >>$S

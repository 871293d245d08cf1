#!/bin/bash
# Session 17, call 1: the options written without a GPU, checked, then measured against the plainer paths in one call.
# - qkv_rope and plain_fusion (session 16: the decode q/k/v mat-vec rotates and stores k, v; F16 weights take the fused mat-vecs),
# - gemm_input fused (session 17: rms_norm and silu_mul write the prompt GEMM's F16 input, one copy serves q, k and v) and the
#   new dequantize_f16 (a thread per 32 elements), against the plugin of session 16 (plugins-base.json: .device/app/plugins/cuda-base),
#   and gemm_batch on (q, k, v of 7B in one strided batched GEMM; gate and up in another).
# Order: the kit's cases and the model checks with every new option on (while the models are made), prompts A/B, decode A/B.
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; grep -m1 "model name" /proc/cpuinfo; } >>$S 2>&1
start_background
B=$OUT/bench.txt
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
NEW="PLUGINENGINE_CUDA_GEMM_INPUT=convert"
FUSED="PLUGINENGINE_CUDA_GEMM_INPUT=fused"
BATCH="PLUGINENGINE_CUDA_GEMM_INPUT=fused PLUGINENGINE_CUDA_GEMM_BATCH=on"
OFF="PLUGINENGINE_CUDA_QKV_ROPE=off PLUGINENGINE_CUDA_PLAIN_FUSION=off"
ON="PLUGINENGINE_CUDA_QKV_ROPE=on PLUGINENGINE_CUDA_PLAIN_FUSION=on"
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left 470 || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "host profile|rror|launches|total" $OUT/last.err | head -24 >>$B; el >>$B; }
{ echo "== kit FusedOps, SegmentOps, MatMul and RmsNorm cases, every new option on"
  env $ON $BATCH PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 170 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*FusedOps*" -method "*SegmentOps*" -method "*MatMul*" -method "*RmsNorm*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -40; el
  echo "== batching"; env $ON $BATCH timeout 40 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL|passed|failed|rror" | tail -5; el
  echo "== conformance (model checks)"; env $ON $BATCH timeout 60 $D/pe conformance --backend cuda 2>&1 | tail -8; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
T=synthetic:tinyllama:Q4_0; TF=synthetic:tinyllama:F16; M7=synthetic:llama7b:Q4_0; K7=synthetic:llama7b:Q4_K_M
for m in $M7 $K7; do for v in BASE NEW FUSED BATCH; do pe ${!v} $D/pe bench -m $m --backend cuda -p 512 -n 0 -r 3; done; done
for m in $T $TF $M7 $K7; do for v in OFF ON; do pe ${!v} $D/pe bench -m $m --backend cuda -p 0 -n 128 -r 3; done; done
pe $BATCH PLUGINENGINE_CUDA_PROFILE=1 $D/pe bench -m $M7 --backend cuda -p 512 -n 0 -r 1
for m in $M7 $K7; do for v in BATCH FUSED NEW BASE; do pe ${!v} $D/pe bench -m $m --backend cuda -p 512 -n 0 -r 3; done; done
for m in $T $TF; do for v in BASE BATCH; do pe ${!v} $D/pe bench -m $m --backend cuda -p 512 -n 0 -r 3; done; done
for m in $T $TF $M7 $K7; do for v in ON OFF; do pe ${!v} $D/pe bench -m $m --backend cuda -p 0 -n 128 -r 3; done; done
pe $ON PLUGINENGINE_CUDA_PROFILE=host $D/pe bench -m $T --backend cuda -p 0 -n 128 -r 3
pe $ON $BATCH $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
cat $B >>$S

#!/bin/bash
# Session 17, call 2: call 1 found the new dequantize_f16 (a thread per 32 elements, four 16-byte stores 64 bytes apart)
# slower than session 16's, so gemm_input convert lost 10 % to the base plugin. This call checks and measures its
# replacement (a thread per 16 elements, stores staged through shared memory into coalesced 512-byte writes), with the
# staging on (default) and off (DEQUANTIZE_STAGED=0), against the base plugin; gemm_prefetch (the next GEMM's weights
# dequantized on a second stream while one runs); and plain_fusion alone on F16 decode.
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; grep -m1 "model name" /proc/cpuinfo; } >>$S 2>&1
start_background
B=$OUT/bench.txt
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
BATCH="PLUGINENGINE_CUDA_GEMM_INPUT=fused PLUGINENGINE_CUDA_GEMM_BATCH=on"
PREF="PLUGINENGINE_CUDA_GEMM_INPUT=fused PLUGINENGINE_CUDA_GEMM_BATCH=on PLUGINENGINE_CUDA_GEMM_PREFETCH=on"
PREF1="PLUGINENGINE_CUDA_GEMM_INPUT=fused PLUGINENGINE_CUDA_GEMM_BATCH=off PLUGINENGINE_CUDA_GEMM_PREFETCH=on"
UNSTAGED="PLUGINENGINE_CUDA_GEMM_INPUT=fused PLUGINENGINE_CUDA_GEMM_BATCH=on PLUGINENGINE_CUDA_DEFINES=DEQUANTIZE_STAGED=0"
FUSED="PLUGINENGINE_CUDA_GEMM_INPUT=fused PLUGINENGINE_CUDA_GEMM_BATCH=off"
CONVERT="PLUGINENGINE_CUDA_GEMM_INPUT=convert PLUGINENGINE_CUDA_GEMM_BATCH=off"
OFF="PLUGINENGINE_CUDA_QKV_ROPE=off PLUGINENGINE_CUDA_PLAIN_FUSION=off"
PF="PLUGINENGINE_CUDA_QKV_ROPE=off PLUGINENGINE_CUDA_PLAIN_FUSION=on"
ON="PLUGINENGINE_CUDA_QKV_ROPE=on PLUGINENGINE_CUDA_PLAIN_FUSION=on"
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left 250 || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "host profile|rror|launches|total" $OUT/last.err | head -14 >>$B; el >>$B; }
{ echo "== kit MatMul cases, gemm_input fused + gemm_batch on + gemm_prefetch on (the staged dequantize_f16 on every weight type)"
  env $PREF PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 120 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*MatMul*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -40; el
  echo "== kit MatMul cases, gemm_prefetch on, gemm_batch off"
  env $PREF1 PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 60 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*MatMul_in_the_same_order*" -method "*MatMulShared*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -20; el
  echo "== conformance (model checks)"; env $ON $PREF timeout 60 $D/pe conformance --backend cuda 2>&1 | tail -8; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
T=synthetic:tinyllama:Q4_0; TF=synthetic:tinyllama:F16; M7=synthetic:llama7b:Q4_0; K7=synthetic:llama7b:Q4_K_M
for m in $M7 $K7; do for v in BASE PREF BATCH UNSTAGED; do pe ${!v} $D/pe bench -m $m --backend cuda -p 512 -n 0 -r 3; done; done
for v in PREF BASE; do pe ${!v} PLUGINENGINE_CUDA_PROFILE=1 $D/pe bench -m $M7 --backend cuda -p 512 -n 0 -r 1; done
for v in OFF PF; do pe ${!v} $D/pe bench -m $TF --backend cuda -p 0 -n 128 -r 3; done
for m in $M7 $K7; do for v in UNSTAGED BATCH PREF BASE; do pe ${!v} $D/pe bench -m $m --backend cuda -p 512 -n 0 -r 3; done; done
for m in $T $TF; do for v in BASE PREF; do pe ${!v} $D/pe bench -m $m --backend cuda -p 512 -n 0 -r 3; done; done
for v in PF OFF; do pe ${!v} $D/pe bench -m $TF --backend cuda -p 0 -n 128 -r 3; done
for m in $M7 $K7; do for v in FUSED CONVERT; do pe ${!v} $D/pe bench -m $m --backend cuda -p 512 -n 0 -r 3; done; done
cat $B >>$S

#!/bin/bash
# Session 18, call 1: the decode switches of kernels.cu written this session (docs/gpu-kernels.md#decode-prefetch), all off
# by default, against the defaults: issue 17's decode rows (tg128) and 7B Q4_0 at depth 4,096. First the defaults' pp512 and
# tg128 on the 7B files (issue 17's 25,000 t/s prompt target is set for an H200), and the kit's matmul/attention cases with
# every switch on. Variants are `PLUGINENGINE_CUDA_DEFINES` values, so one bundle runs them all.
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16 llama7b:Q4_0:8192"
AB="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; grep -m1 "model name" /proc/cpuinfo; } >>$S 2>&1
start_background
B=$OUT/bench.txt
ALL="PDL_EARLY_TRIGGER=1;MATVEC_PREFETCH_L2=1;ATTENTION_PREFETCH_L2=1"
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left 545 || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
tg() { v=$1; shift; for m in "$@"; do pe PLUGINENGINE_CUDA_DEFINES="$v" $D/pe bench -m synthetic:$m --backend cuda -p 0 -n 128 -r 5; done; }
{ echo "== kit MatMul/Attention/Decode cases, every switch on"
  env PLUGINENGINE_CONFORMANCE_BACKENDS=cuda PLUGINENGINE_CUDA_DEFINES="$ALL;ATTENTION_PREFETCH_STEPS=1;Q4K_WIDE_LOADS=1" timeout 90 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*MatMul*" -method "*Attention*" -method "*Decode*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -40; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
for m in llama7b:Q4_0 llama7b:Q4_K_M; do pe X=1 $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 128 -r 3; done
# pass 1 of the decode A/B
for v in "" "PDL_EARLY_TRIGGER=1" "MATVEC_PREFETCH_L2=1" "PDL_EARLY_TRIGGER=1;MATVEC_PREFETCH_L2=1" "PDL_EARLY_TRIGGER=2;MATVEC_PREFETCH_L2=1"; do tg "$v" $AB; done
for v in "Q4K_WIDE_LOADS=1" "" "Q4K_WIDE_LOADS=1;MATVEC_MIN_BLOCKS=12" "MATVEC_MIN_BLOCKS=12"; do tg "$v" llama7b:Q4_K_M; done
# depth
for v in "" "ATTENTION_PREFETCH_STEPS=1" "ATTENTION_PREFETCH_STEPS=2" "$ALL" "$ALL;ATTENTION_PREFETCH_STEPS=1"; do
  pe PLUGINENGINE_CUDA_DEFINES="$v" $D/pe bench -m synthetic:llama7b:Q4_0:8192 --backend cuda -p 0 -n 64 -d 0,4096 -r 2
done
# pass 2, reversed
for v in "PDL_EARLY_TRIGGER=2;MATVEC_PREFETCH_L2=1" "PDL_EARLY_TRIGGER=1;MATVEC_PREFETCH_L2=1" "MATVEC_PREFETCH_L2=1" "PDL_EARLY_TRIGGER=1" ""; do tg "$v" $AB; done
for m in llama7b:Q4_0 tinyllama:F16; do pe PLUGINENGINE_CUDA_DEFINES="$ALL" $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 0 -r 3; done
cat $B >>$S

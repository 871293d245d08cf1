#!/bin/bash
# Session 20, call 1 (s19a.sh with a longer time guard). (1) The kit with the decode mat-vecs' weight preload on (MATVEC_PRELOAD / SWIGLU_PRELOAD, kernels.cu;
# off by default) and the Q8_0 KV cache's cases; the model checks. (2) tg128 with each preload setting against the same
# build's defaults and the plugin of 7ff9cc2 (before the WeightUnit refactor: plugins-base.json), two passes. (3) 7B Q4_0
# at depth 0 / 4,096 / 16,384 with an F16 and a Q8_0 cache. (4) On an H200 also issue 17's 7B prompt rows.
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 llama7b:Q4_0:20480"
NO_LLAMA=1
export PLUGINENGINE_CUDA_Q8_0_CACHE=on # the Q8_0 cache on the device (off by default until this has run)
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
start_background
B=$OUT/bench.txt
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left ${GUARD:-500} || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
ON="MATVEC_PRELOAD=2;SWIGLU_PRELOAD=2"
{ echo "== kit MatMul/Attention/Decode/Rope/Convert/Segment cases, $ON"
  env PLUGINENGINE_CUDA_DEFINES="$ON" PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 150 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*MatMul*" -method "*Attention*" -method "*Decode*" -method "*Rope*" -method "*Convert*" -method "*Segment*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -60; el
  echo "== conformance (model checks), $ON"; PLUGINENGINE_CUDA_DEFINES="$ON" timeout 60 $D/pe conformance --backend cuda 2>&1 | grep -E "FAIL|conformance cuda"; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
pe X=1 $D/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 512 -n 0 -ctk f16,q8_0 -r 3 # prompts over a Q8_0 cache: attention_mma_q8_0
ab() { for m in llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0; do
    pe PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json $D/pe bench -m synthetic:$m --backend cuda -p 0 -n 128 -r 5
    for v in "" "MATVEC_PRELOAD=2" "MATVEC_PRELOAD=4" "$ON"; do
      pe PLUGINENGINE_CUDA_DEFINES="$v" $D/pe bench -m synthetic:$m --backend cuda -p 0 -n 128 -r 5; done; done; }
ab
pe X=1 $D/pe bench -m synthetic:llama7b:Q4_0:20480 --backend cuda -p 0 -n 64 -d 0,4096,16384 -ctk f16,q8_0 -r 2
pe PLUGINENGINE_CUDA_QKV_ROPE=on PLUGINENGINE_CUDA_SWIGLU_QUANTIZE=on $D/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 0 -n 128 -r 5 # 157 launches a token, not 201
if grep -q H200 $S; then for m in llama7b:Q4_0 llama7b:Q4_K_M; do pe X=1 $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 0 -r 3; done; fi
ab
cat $B >>$S

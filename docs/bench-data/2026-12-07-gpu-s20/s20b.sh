#!/bin/bash
# Session 20, the short call (s20a.sh does not fit in what device time is left): the kit with the Q8_0 cache on the
# device and the mat-vec preload on, then 7B Q4_0 tg128 with each preload setting if time is left.
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_0:20480"
NO_LLAMA=1
export PLUGINENGINE_CUDA_Q8_0_CACHE=on
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
start_background
B=$OUT/bench.txt
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left 330 || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
ON="MATVEC_PRELOAD=2;SWIGLU_PRELOAD=2"
{ echo "== kit Attention/Convert/Segment/Rope/Decode/MatMul cases, q8_0_cache on, $ON"
  env PLUGINENGINE_CUDA_DEFINES="$ON" PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 120 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*Attention*" -method "*Convert*" -method "*Segment*" -method "*Rope*" -method "*Decode*" -method "*MatMul*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -60; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; left 330 || break; done; cat /tmp/models.done >>$S 2>/dev/null
pe PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json $D/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -p 0 -n 128 -r 5
for v in "" "MATVEC_PRELOAD=2" "MATVEC_PRELOAD=4" "$ON"; do pe PLUGINENGINE_CUDA_DEFINES="$v" $D/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -p 0 -n 128 -r 5; done
pe X=1 $D/pe bench -m synthetic:llama7b:Q4_0:20480 --backend cuda -p 512 -n 32 -d 0,16384 -ctk f16,q8_0 -r 2
cat $B >>$S

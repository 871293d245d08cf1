#!/bin/bash
# Session 21, not run (no device time left): Q8_0 and Q4_0 quants turned into floats with a byte permute and an add
# (KV_BYTE_PERMUTE=1: byte_minus) instead of shifts and
# an int-to-float conversion, against the plugin of 94ea1cf (plugins-base.json): the kit's Attention cases, then 7B Q4_0 tg32 at
# depth 16,384. Bundle: BASE=94ea1cf scripts/device/prepare-carry-bundle.sh .device.
set -u
MODELS="llama7b:Q4_0:20480"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
start_background
B=$OUT/bench.txt
pe() { echo "== $*" >>$B; timeout 60 env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
{ echo "== kit Attention cases with KV_BYTE_PERMUTE=1 (q8_0_cache, q4_0_cache on: the defaults)"
  env PLUGINENGINE_CUDA_DEFINES=KV_BYTE_PERMUTE=1 PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 90 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*Attention*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -40; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; [ $(( $(date +%s) - T0 )) -lt 150 ] || break; done
M7=synthetic:llama7b:Q4_0:20480
pe PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 16384 -ctk q8_0,q4_0 -r 2
pe PLUGINENGINE_CUDA_DEFINES=KV_BYTE_PERMUTE=1 $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 16384 -ctk q8_0,q4_0 -r 2
pe X=1 $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 16384 -ctk q8_0,q4_0 -r 2
cat $B >>$S

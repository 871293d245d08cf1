#!/bin/bash
# Session 21, call 1: the one-token attention kernels with packed K/V registers and the narrow (*_h128) variants
# (docs/gpu-kernels.md#decode-attention-registers) against the plugin of 75e9659 (plugins-base.json), on 7B Q4_0 at depth
# with F16 and Q8_0 caches; the kit's attention cases; Nsight Compute on attention_split_* before and after.
# Bundle: BASE=75e9659 scripts/device/prepare-carry-bundle.sh .device. GUARD=seconds: no bench starts after that (default 480).
set -u
MODELS="llama7b:Q4_0:20480 tinyllama:Q4_0"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
start_background
B=$OUT/bench.txt
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left ${GUARD:-480} || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
BASEP="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
{ echo "== kit Attention/Decode/Segment/Rope cases (defaults: q8_0_cache on)"
  env PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 150 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*Attention*" -method "*Segment*" -method "*Rope*" -method "*Decode*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -60; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; left 300 || break; done; cat /tmp/models.done >>$S 2>/dev/null
M7=synthetic:llama7b:Q4_0:20480
for v in base new base new; do
  if [ $v = base ]; then pe $BASEP $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 0,4096,16384 -ctk f16,q8_0 -r 2
  else pe X=1 $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 0,4096,16384 -ctk f16,q8_0 -r 2; fi
done
pe PLUGINENGINE_CUDA_DEFINES="ATTENTION_SPLIT_P=8;ATTENTION_H128_BLOCKS=1" $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 16384 -ctk f16,q8_0 -r 2
pe $BASEP $D/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 0 -n 64 -d 0,1536 -ctk f16,q8_0 -r 2
pe X=1 $D/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 0 -n 64 -d 0,1536 -ctk f16,q8_0 -r 2
pe $BASEP $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 32 -r 2
pe X=1 $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 32 -r 2
cat $B >>$S
# Nsight Compute: two attention_split launches of a decode step at depth 16,384, before and after, each cache type.
NCU="/usr/local/cuda/bin/ncu --kernel-name regex:attention_split --launch-skip 64 --launch-count 2 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis"
for v in base new; do for c in f16 q8_0; do
  left ${GUARD:-480} || { echo "skipped ncu $v $c (time)" >>$S; continue; }
  if [ $v = base ]; then P=$PWD/.device/app/plugins-base.json; else P=$PWD/.device/app/plugins.json; fi
  PLUGINENGINE_PLUGINS=$P timeout 100 $NCU $D/pe bench -m $M7 --backend cuda -p 0 -n 4 -d 16384 -ctk $c -r 1 >$OUT/ncu-$v-$c.txt 2>&1
  echo "ncu $v $c exit $? $(el)" >>$S
done; done

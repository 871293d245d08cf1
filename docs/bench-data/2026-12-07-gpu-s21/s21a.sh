#!/bin/bash
# Session 21, call 1: the one-token attention kernels with packed K/V registers and the narrow (*_h128) variants
# (docs/gpu-kernels.md#decode-attention-registers) against the plugin of 75e9659 (plugins-base.json), on 7B Q4_0 at depth
# with F16 and Q8_0 caches, and the new GPU Q4_0 cache (q4_0_cache on); the kit's attention cases with the Q4_0 cache on the
# device; Nsight Compute on attention_split_* before and after.
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
export PLUGINENGINE_CUDA_Q4_0_CACHE=on # the base plugin does not know the option and leaves Q4_0 caches on the CPU
{ echo "== kit Attention/Decode/Segment/Rope/Convert cases (defaults: q8_0_cache on; q4_0_cache on)"
  env PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 150 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*Attention*" -method "*Segment*" -method "*Rope*" -method "*Decode*" -method "*Convert*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -60; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; left 300 || break; done; cat /tmp/models.done >>$S 2>/dev/null
M7=synthetic:llama7b:Q4_0:20480
for v in base new base new; do
  if [ $v = base ]; then pe $BASEP $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 0,4096,16384 -ctk f16,q8_0 -r 2
  else pe X=1 $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 0,4096,16384 -ctk f16,q8_0,q4_0 -r 2; fi
done
# Nsight Compute: two attention_split launches of a decode step at depth 16,384, before and after.
NCU="/usr/local/cuda/bin/ncu --kernel-name regex:attention_split --launch-skip 64 --launch-count 2 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis"
ncu_run() { # plugins.json, cache type, name
  left ${GUARD:-480} || { echo "skipped ncu $3 (time)" >>$S; return; }
  PLUGINENGINE_PLUGINS=$1 timeout 100 $NCU $D/pe bench -m $M7 --backend cuda -p 0 -n 4 -d 16384 -ctk $2 -r 1 >$OUT/ncu-$3.txt 2>&1
  echo "ncu $3 exit $? $(el)" >>$S
}
ncu_run $PWD/.device/app/plugins-base.json q8_0 base-q8_0
ncu_run $PWD/.device/app/plugins.json q8_0 new-q8_0
pe PLUGINENGINE_CUDA_DEFINES="ATTENTION_SPLIT_P=8;ATTENTION_H128_BLOCKS=1" $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 16384 -ctk f16,q8_0 -r 2
pe X=1 $D/pe bench -m $M7 --backend cuda -p 512 -n 0 -d 0,16384 -ctk f16,q8_0,q4_0 -r 2
ncu_run $PWD/.device/app/plugins-base.json f16 base-f16
ncu_run $PWD/.device/app/plugins.json f16 new-f16
ncu_run $PWD/.device/app/plugins.json q4_0 new-q4_0
pe $BASEP $D/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 0 -n 64 -d 0,1536 -ctk f16,q8_0 -r 2
pe X=1 $D/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 0 -n 64 -d 0,1536 -ctk f16,q8_0,q4_0 -r 2
pe $BASEP $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 32 -r 2
pe X=1 $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 32 -r 2
cat $B >>$S

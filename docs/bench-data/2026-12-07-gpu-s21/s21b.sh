#!/bin/bash
# Session 21, the short call (what s21a.sh does first, when less device time is left): the kit's attention cases with the
# Q4_0 cache on the device, 7B Q4_0 at depth against the plugin of 75e9659, Nsight Compute on attention_split over Q8_0.
set -u
MODELS="llama7b:Q4_0:20480"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
start_background
B=$OUT/bench.txt
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left ${GUARD:-300} || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
BASEP="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
export PLUGINENGINE_CUDA_Q4_0_CACHE=on # the base plugin does not know the option and leaves Q4_0 caches on the CPU
{ echo "== kit Attention/Decode/Segment/Rope/Convert cases (defaults: q8_0_cache on; q4_0_cache on)"
  env PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 150 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*Attention*" -method "*Segment*" -method "*Rope*" -method "*Decode*" -method "*Convert*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -60; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; left 200 || break; done; cat /tmp/models.done >>$S 2>/dev/null
M7=synthetic:llama7b:Q4_0:20480
pe $BASEP $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 0,16384 -ctk f16,q8_0 -r 2
pe X=1 $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 0,16384 -ctk f16,q8_0,q4_0 -r 2
NCU="/usr/local/cuda/bin/ncu --kernel-name regex:attention_split --launch-skip 64 --launch-count 2 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis"
for v in base new; do
  left ${GUARD:-300} || { echo "skipped ncu $v (time)" >>$S; continue; }
  if [ $v = base ]; then P=$PWD/.device/app/plugins-base.json; else P=$PWD/.device/app/plugins.json; fi
  PLUGINENGINE_PLUGINS=$P timeout 80 $NCU $D/pe bench -m $M7 --backend cuda -p 0 -n 4 -d 16384 -ctk q8_0 -r 1 >$OUT/ncu-$v-q8_0.txt 2>&1
  echo "ncu $v q8_0 exit $? $(el)" >>$S
done
cat $B >>$S

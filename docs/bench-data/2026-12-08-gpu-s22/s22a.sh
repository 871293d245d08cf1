#!/bin/bash
# Session 22: the one-token attention's instructions (docs/gpu-kernels.md#decode-attention-instructions: a step's positions
# shared out over the lanes, group addresses formed once, the block scale once per group, KV_BYTE_PERMUTE on by default)
# against the plugin of a0d2f55 (plugins-base.json): the kit's attention cases (and with KV_BYTE_PERMUTE=0), 7B Q4_0 decode at
# depth for the three cache types, Nsight Compute on attention_split, TinyLlama at depth and 16 sequences, then (where time
# is left) 7B pp512 and the whole kit. Bundle: BASE=a0d2f55 scripts/device/prepare-carry-bundle.sh .device.
set -u
MODELS="llama7b:Q4_0:20480 tinyllama:Q4_0 llama7b:Q4_K_M"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
start_background
B=$OUT/bench.txt
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left ${GUARD:-480} || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
BASEP="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
kit() { echo "== kit $1 ($2)"; env $2 PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout $3 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    $1 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -60; el; }
kit '-method *Attention* -method *Segment* -method *Rope* -method *Decode* -method *Convert*' X=1 150 >>$S
kit '-method *Attention*' PLUGINENGINE_CUDA_DEFINES=KV_BYTE_PERMUTE=0 90 >>$S
while [ ! -e /tmp/models.done ] && ! ls /tmp/pe-cache/*tinyllama* >/dev/null 2>&1; do sleep 2; left 200 || break; done
M7=synthetic:llama7b:Q4_0:20480
pe $BASEP $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 0,4096,16384 -ctk f16,q8_0,q4_0 -r 2
pe X=1 $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 0,4096,16384 -ctk f16,q8_0,q4_0 -r 2
pe PLUGINENGINE_CUDA_DEFINES=KV_BYTE_PERMUTE=0 $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 16384 -ctk q8_0,q4_0 -r 2
pe PLUGINENGINE_CUDA_DEFINES="ATTENTION_SPLIT_P=8;ATTENTION_H128_BLOCKS=1" $D/pe bench -m $M7 --backend cuda -p 0 -n 32 -d 16384 -ctk f16,q8_0,q4_0 -r 2
NCU="/usr/local/cuda/bin/ncu --kernel-name regex:attention_split --launch-skip 64 --launch-count 2 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats --section MemoryWorkloadAnalysis --section InstructionStats"
for c in q8_0 q4_0 f16; do
  left ${GUARD:-480} || { echo "skipped ncu $c (time)" >>$S; continue; }
  timeout 60 $NCU $D/pe bench -m $M7 --backend cuda -p 0 -n 4 -d 16384 -ctk $c -r 1 >$OUT/ncu-new-$c.txt 2>&1
  echo "ncu new $c exit $? $(el)" >>$S
done
MT=synthetic:tinyllama:Q4_0
pe $BASEP $D/pe bench -m $MT --backend cuda -p 0 -n 64 -d 0,1536 -ctk f16,q8_0 -r 2
pe X=1 $D/pe bench -m $MT --backend cuda -p 0 -n 64 -d 0,1536 -ctk f16,q8_0 -r 2
pe $BASEP $D/pe bench -m $M7 --backend cuda --parallel 16 --parallel-prompt 1024 -n 32 -r 2
pe X=1 $D/pe bench -m $M7 --backend cuda --parallel 16 --parallel-prompt 1024 -n 32 -r 2
while [ ! -e /tmp/models.done ]; do sleep 2; left 420 || break; done; cat /tmp/models.done >>$S 2>/dev/null
pe X=1 $D/pe bench -m synthetic:llama7b:Q4_0,synthetic:llama7b:Q4_K_M --backend cuda -p 512 -n 0 -r 3
cat $B >>$S
if left 430; then kit '' X=1 $(( 585 - ($(date +%s) - T0) )) >$OUT/kit-all.txt 2>&1; tail -3 $OUT/kit-all.txt >>$S; fi

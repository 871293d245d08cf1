#!/bin/bash
# Session 14, call 2: swiglu_quantize now off by default (call 1: slower on 7B). The one- and 16-sequence curve of the
# defaults against the previous commit's plugin, then the 16-sequence step under tuning defines (attention_rows scoring more
# positions per step, the tiled Q4_0 mmq loop unrolled, its L2 prefetch distance), one run each.
set -u
MODELS="llama7b:Q4_0"; NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
B=$OUT/bench.txt
pe() { [ $(( $(date +%s) - T0 )) -gt 130 ] && { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$B; el >>$B; }
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
{ echo "== kit Segment cases, ATTENTION_ROWS_P=4 and MMQ_TILED_UNROLL=2"; PLUGINENGINE_CUDA_DEFINES="ATTENTION_ROWS_P=4;MMQ_TILED_UNROLL=2" PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 50 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none -method "*Segment*" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -20; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 3; done
M7=synthetic:llama7b:Q4_0
pe $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
pe $BASE $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
for d in ATTENTION_ROWS_P=4 MMQ_TILED_UNROLL=2; do
  pe PLUGINENGINE_CUDA_DEFINES="$d" $D/pe bench -m $M7 --backend cuda --parallel 16 -n 64 -r 2
done
cat $B >>$S

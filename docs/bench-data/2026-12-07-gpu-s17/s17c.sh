#!/bin/bash
# Session 17, call 3: the defaults of commit after call 2 (gemm_input fused, gemm_batch on, plain_fusion on, dequantize_f16 a
# thread per 16 elements with two 16-byte stores, no staging), checked by the kit's matmul and fused-op cases, then issue 17's
# rows of ours (pp512 and tg128, the table's command) and the session-16 plugin's prompts beside them.
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; grep -m1 "model name" /proc/cpuinfo; } >>$S 2>&1
start_background
B=$OUT/bench.txt
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
left() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pe() { left 130 || { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>$OUT/last.err | grep -E "^\| synthetic" >>$B; grep -E "rror" $OUT/last.err | head -5 >>$B; el >>$B; }
{ echo "== kit MatMul cases, default options"
  env PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 60 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none \
    -method "*MatMul_matches*" -method "*MatMul_in_the_same*" -method "*MatMulShared*" 2>&1 | grep -E "Total:|\[FAIL\]" -A6 | head -40; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
for m in llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16; do pe X=1 $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 128 -r 3; done
for m in llama7b:Q4_0 llama7b:Q4_K_M; do pe $BASE $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 0 -r 3; done
cat $B >>$S

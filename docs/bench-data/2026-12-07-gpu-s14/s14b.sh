#!/bin/bash
# Session 14, call 2 (right after call 1, on the same warm machine): issue 17's table side by side with llama.cpp c392e50
# (built in the background by call 1; best of -fa 0/1) on the same GGUF files: pp512/tg128 of the four shapes; the
# concurrent-decode curve of 7B Q4_0 against llama-batched-bench; decode at depth. EXTRA (environment) is applied to our
# benches: the options call 1 measured best.
set -u
T0=${T0:-$(date +%s)}
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16"
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; echo "EXTRA=${EXTRA:-}"; } >>$S
start_background
while [ ! -e /tmp/models.done ]; do sleep 3; done
B=$OUT/bench.txt
pe() { echo "== pe bench $*" >>$B; env ${EXTRA:-} $D/pe bench "$@" 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$B; el >>$B; }
for m in $MODELS; do pe -m synthetic:$m --backend cuda -p 512 -n 128 -r 3; done
pe -m synthetic:llama7b:Q4_0 --backend cuda -p 1 -n 64 -d 0,2048,3968 -r 2
while [ ! -e /tmp/llama.done ]; do [ $(( $(date +%s) - T0 )) -gt 200 ] && break; sleep 3; done
cat /tmp/llama.done >>$S 2>&1
L=/tmp/llama.cpp/build/bin
F=""; for m in $MODELS; do F="$F -m $(model_file ${m%%:*} ${m##*:})"; done
echo "files:$F" >>$S
{ echo "== llama-bench"; timeout 240 $L/llama-bench $F -p 512 -n 128 -r 3 -ngl 99 -fa 0,1 -o md 2>>$OUT/err.txt; el; } >>$B
Q=$(model_file llama7b Q4_0)
[ $(( $(date +%s) - T0 )) -lt 450 ] && { echo "== llama-batched-bench -fa"; timeout 90 $L/llama-batched-bench -m $Q -c 8192 -b 2048 -ub 512 -npp 16 -ntg 64 -npl 1,4,16,64 -ngl 99 -fa 2>>$OUT/err.txt | grep -E "^\|"; el; } >>$B
[ $(( $(date +%s) - T0 )) -lt 520 ] && pe -m synthetic:llama7b:Q4_0 --backend cuda --parallel 1,4,16,64 -n 64 -r 2
cat $B >>$S

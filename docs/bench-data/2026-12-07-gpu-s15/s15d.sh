#!/bin/bash
# Session 15, last call (an H200 if one comes): issue 17's table beside llama.cpp c392e50 in one call, on the same GGUF
# files. llama.cpp builds in the background (about four minutes) while our pp512/tg128 rows run with the default options;
# then llama-bench with -fa 1 (its faster setting in every row of session 12's table) and -r 2, to fit the time left.
set -u
T0=$(date +%s)
MODELS="tinyllama:Q4_0 tinyllama:F16 llama7b:Q4_0 llama7b:Q4_K_M"
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
B=$OUT/bench.txt
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
for m in $MODELS; do echo "== pe bench -m synthetic:$m --backend cuda -p 512 -n 128 -r 3" >>$B
  $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 128 -r 3 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$B; el >>$B; done
while [ ! -e /tmp/llama.done ] && [ $(( $(date +%s) - T0 )) -lt 260 ]; do sleep 3; done
cat /tmp/llama.done >>$S 2>&1
F=""; for m in $MODELS; do F="$F -m $(model_file ${m%%:*} ${m##*:})"; done
echo "files:$F" >>$S
{ echo "== llama-bench -p 512 -n 128 -r 2 -ngl 99 -fa 1"; timeout 65 /tmp/llama.cpp/build/bin/llama-bench $F -p 512 -n 128 -r 2 -ngl 99 -fa 1 -o md 2>>$OUT/err.txt; el; } >>$B
cat $B >>$S

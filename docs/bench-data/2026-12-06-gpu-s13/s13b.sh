#!/bin/bash
# Session 13, call 2 (right after call 1, on the same warm machine): the side-by-side with llama.cpp c392e50 (built in the
# background by call 1; best of -fa 0/1) on the same GGUF files, pp512/tg128 of the four issue-17 shapes and the
# concurrent-decode curve of 7B Q4_0 (llama-batched-bench -npp 16 -ntg 64), and a per-kernel profile of our 16-sequence step
# (PLUGINENGINE_CUDA_PROFILE=1: each queue prints its kernels' GPU time to stderr when it is disposed).
set -u
T0=${T0:-$(date +%s)}
MODELS="llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16"
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
[ -n "$(model_file tinyllama F16)" ] || $D/pe bench -m synthetic:tinyllama:F16 --backend cpu -p 1 -n 1 -r 1 >/dev/null 2>>$OUT/err.txt
while [ ! -e /tmp/models.done ]; do sleep 3; done
B=$OUT/bench.txt
pe() { echo "== pe bench $*" >>$B; $D/pe bench "$@" 2>>$OUT/err.txt | grep -E "^\|" >>$B; el >>$B; }
[ -e /tmp/llama.done ] || echo "llama.cpp still building when our benches started: $(el)" >>$S
for m in $MODELS; do pe -m synthetic:$m --backend cuda -p 512 -n 128 -r 3; done
{ echo "== profile, 16 sequences"; PLUGINENGINE_CUDA_PROFILE=1 $D/pe bench -m synthetic:llama7b:Q4_0 --backend cuda --parallel 16 -n 32 -r 1 2>&1 | grep -vE "^\| *(model|---)" | head -60; el; } >>$OUT/profile.txt
{ echo "== profile, one sequence"; PLUGINENGINE_CUDA_PROFILE=1 $D/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -p 1 -n 64 -r 1 2>&1 | grep -vE "^\| *(model|---)" | head -60; el; } >>$OUT/profile.txt
while [ ! -e /tmp/llama.done ]; do [ $(( $(date +%s) - T0 )) -gt 300 ] && break; sleep 3; done
cat /tmp/llama.done >>$S 2>&1
L=/tmp/llama.cpp/build/bin
F=""; for m in $MODELS; do F="$F -m $(model_file ${m%%:*} ${m##*:})"; done
echo "files:$F" >>$S
{ echo "== llama-bench"; timeout 200 $L/llama-bench $F -p 512 -n 128 -r 3 -ngl 99 -fa 0,1 -o md 2>>$OUT/err.txt; el; } >>$B
Q=$(model_file llama7b Q4_0)
for fa in "" "-fa"; do
  [ $(( $(date +%s) - T0 )) -gt 500 ] && break
  { echo "== llama-batched-bench $fa"; timeout 90 $L/llama-batched-bench -m $Q -c 8192 -b 2048 -ub 512 -npp 16 -ntg 64 -npl 1,4,16,64 -ngl 99 $fa 2>>$OUT/err.txt | grep -E "^\|"; el; } >>$B
done
cat $B >>$S

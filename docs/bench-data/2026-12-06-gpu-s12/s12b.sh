#!/bin/bash
# Session 12, call 2 (right after call 1, on the same machine when it is still warm): the side-by-side that issues 14 and 17
# ask for. PluginEngine (commit fd01a0c, default options) and llama.cpp c392e50 (the anchors snapshot, best of -fa 0/1) on the
# same GGUF files: pp512/tg128 of the four issue-17 shapes, and aggregate decode with 1, 4, 16 and 64 sequences on 7B Q4_0
# (bench --parallel; llama-batched-bench -npp 16 -ntg 64). Starts llama.cpp and the models itself when call 1's are gone.
set -u
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
B=$OUT/bench.txt
pe() { echo "== pe bench $*" >>$B; $D/pe bench "$@" 2>>$OUT/err.txt | grep -E "^\|" >>$B; el >>$B; }
# Ours first (the build may still be running if this machine is new: then these rows share the CPU with it; noted in $S).
while [ ! -e /tmp/models.done ]; do sleep 3; done
[ -e /tmp/llama.done ] || echo "llama.cpp still building when our benches started: $(el)" >>$S
pe -m synthetic:llama7b:Q4_0 --backend cuda --parallel 1,4,16,64 -n 64 -r 2
PLUGINENGINE_CUDA_WEIGHT_LAYOUT=gguf pe -m synthetic:llama7b:Q4_0 --backend cuda --parallel 1,16 -n 64 -r 2
for m in $MODELS; do pe -m synthetic:$m --backend cuda -p 512 -n 128 -r 3; done
while [ ! -e /tmp/llama.done ]; do [ $(( $(date +%s) - T0 )) -gt 420 ] && break; sleep 3; done
cat /tmp/llama.done >>$S 2>&1
L=/tmp/llama.cpp/build/bin
F=""; for m in $MODELS; do F="$F -m $(model_file ${m%%:*} ${m##*:})"; done
echo "files:$F" >>$S
{ echo "== llama-bench"; timeout 200 $L/llama-bench $F -p 512 -n 128 -r 3 -ngl 99 -fa 0,1 -o md 2>>$OUT/err.txt; el; } >>$B
Q=$(model_file llama7b Q4_0)
for fa in "" "-fa"; do
  { echo "== llama-batched-bench $fa"; timeout 120 $L/llama-batched-bench -m $Q -c 8192 -b 2048 -ub 512 -npp 16 -ntg 64 -npl 1,4,16,64 -ngl 99 $fa 2>>$OUT/err.txt | grep -E "^\|"; el; } >>$B
done
cat $B >>$S

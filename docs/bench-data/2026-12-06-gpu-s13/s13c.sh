#!/bin/bash
# Session 13, call 2 (right after call 1 on the same warm machine): call 1 showed matvec_wide far slower, so everything here
# runs with it off (PLUGINENGINE_CUDA_MATVEC_WIDE=off: the mat-vec of before). The concurrent-decode curve against the previous
# commit's plugin, decode at depth, then s13b.sh (the side-by-side with llama.cpp and the per-kernel profiles).
set -u
export PLUGINENGINE_CUDA_MATVEC_WIDE=off
. docs/bench-data/2026-12-06-gpu-s12/common.sh
B0=$OUT/ab.txt
pe() { echo "== $*" >>$B0; env "$@" 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$B0; el >>$B0; }
BASE="PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json"
M7=synthetic:llama7b:Q4_0
pe $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
pe $BASE $D/pe bench -m $M7 --backend cuda --parallel 1,16 -n 64 -r 2
pe $D/pe bench -m $M7 --backend cuda --parallel 1,4,16,64 -n 64 -r 2
pe $D/pe bench -m $M7 --backend cuda -p 1 -n 64 -d 0,2048,3968 -r 2
cat $B0 >>$S
T0=$(date +%s) . docs/bench-data/2026-12-06-gpu-s13/s13b.sh

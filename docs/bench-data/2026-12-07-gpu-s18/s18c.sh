#!/bin/bash
# Session 18, last call (not run: no device time left; only worth it on an H200): issue 17's 7B prompt and decode rows with
# the defaults (against its 25,000 t/s for pp512), then 7B Q4_0 at depths 4,096 and 16,384 (its 60 % of depth 0).
set -u
MODELS="llama7b:Q4_0 llama7b:Q4_K_M llama7b:Q4_0:20480"
NO_LLAMA=1
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S 2>&1
grep -q H200 $S || { echo "not an H200: nothing run" >>$S; exit 0; }
start_background
while [ ! -e /tmp/models.done ]; do sleep 2; done; cat /tmp/models.done >>$S
for m in llama7b:Q4_0 llama7b:Q4_K_M; do echo "== pe bench -m synthetic:$m --backend cuda -p 512 -n 128 -r 3" >>$S
  $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 128 -r 3 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$S; el >>$S; done
echo "== pe bench -m synthetic:llama7b:Q4_0:20480 --backend cuda -p 0 -n 64 -d 0,4096,16384 -r 2" >>$S
$D/pe bench -m synthetic:llama7b:Q4_0:20480 --backend cuda -p 0 -n 64 -d 0,4096,16384 -r 2 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$S; el >>$S

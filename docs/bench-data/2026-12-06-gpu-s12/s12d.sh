#!/bin/bash
# Session 12, call 5: the decode attention's chunk from the SM count (LaunchGeometry.AttentionChunk): the kit's attention
# and segment cases, and 7B Q4_0 tg64 at depths 0-3,968 (call 4 measured fixed 512 and 1,024 chunks on an H100).
set -u
NO_LLAMA=1 MODELS="llama7b:Q4_0"
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 200 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@"; }
{ echo "== kit Attention"; kit -method "*Attention*" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -30; el
  el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 3; done
{ echo "== tg64 at depth, default options"; $D/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -p 1 -n 64 -d 0,2048,3968 -r 2 2>>$OUT/err.txt | grep -E "^\| synthetic"; el;
  } >>$S

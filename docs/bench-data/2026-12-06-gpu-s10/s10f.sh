#!/bin/bash
# Session 10, call 5: the final tree (CPU weights repacked once as the kit's reference): the whole kit and conformance on
# CUDA; TinyLlama decode with MATMUL_UNROLL 1/2/4 (F16) and step graphs on/off (Q4_0).
set -u
D=.device
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s]"; }
[ -x /tmp/dn/dotnet ] || { mkdir -p /tmp/dn && tar xJf $D/rt.txz -C /tmp/dn; }
export DOTNET_ROOT=/tmp/dn DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_TieredPGO=1
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64
export PLUGINENGINE_CACHE=/tmp/pe-cache
S=$OUT/summary.txt
row() { grep -E "^\| synthetic|model " | grep -v -- "---"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } >>$S
echo 64 >/proc/sys/vm/nr_hugepages 2>/dev/null
{ echo "== whole kit (cuda)"; PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 110 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -30; } >>$S
echo "$(el)" >>$S
b() { local label=$1; shift; echo "== $label" >>$S; env "$@" 2>>$OUT/err.txt | row >>$S; echo "$(el)" >>$S; }
T=".device/pe bench -m synthetic:tinyllama:F16 --backend cuda -p 16 -n 128 -r 3"
for u in 1 2 4; do b "tinyllama F16 MATMUL_UNROLL=$u" PLUGINENGINE_CUDA_DEFINES="MATMUL_UNROLL=$u" $T; done
b "tinyllama Q4_0 graphs off" .device/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 16 -n 128 -r 3
b "tinyllama Q4_0 graphs on" PLUGINENGINE_CUDA_GRAPHS=on .device/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 16 -n 128 -r 3
{ echo "== conformance cuda (all types)"; timeout 90 .device/pe conformance --backend cuda --types f32,f16,q8_0,q4_0,q4_k,q6_k,q4_k_m 2>&1 | grep -E "PASS|FAIL|conformance" | cut -c1-160; } >>$S
echo "$(el) done" >>$S

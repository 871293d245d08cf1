#!/bin/bash
# Session 10, call 4: does the K split help Q4_K? Q4_K_M prompts with the tensor-core attention; a 7B prompt profile.
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
b() { local label=$1; shift; echo "== $label" >>$S; env "$@" 2>>$OUT/err.txt | row >>$S; echo "$(el)" >>$S; }
K=".device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda -n 32 -r 2 --parallel 16"
.device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda --parallel 16 -n 4 -r 1 >/dev/null 2>>$OUT/err.txt
b "Q4_K_M x16 split auto" $K
b "Q4_K_M x16 MMA_SPLIT=1" PLUGINENGINE_CUDA_MMA_SPLIT=1 $K
b "Q4_K_M x16 split auto (again)" $K
b "pp512 Q4_K_M + tinyllama Q4_0, flash on" .device/pe bench -m synthetic:llama7b:Q4_K_M,synthetic:tinyllama:Q4_0 --backend cuda -p 512 -n 1 -r 3
b "pp512 Q4_K_M, flash off" PLUGINENGINE_CUDA_FLASH_ATTN=off .device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda -p 512 -n 1 -r 3
echo "== profile pp512 7b Q4_K_M (flash on)" >>$S
PLUGINENGINE_CUDA_PROFILE=1 .device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda -p 512 -n 1 -r 1 2>&1 | grep -vE "^\[|^\|" | head -14 >>$S
echo "$(el) done" >>$S

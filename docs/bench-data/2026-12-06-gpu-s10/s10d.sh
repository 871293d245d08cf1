#!/bin/bash
# Session 10, call 3: new mmq defaults (cap 3 blocks/SM on the one-tile Q4_0/Q8_0 kernels, prefetch 16, K split) and the
# tensor-core prompt attention: kit, curves, pp512 with flash_attn on/off, a pp512 profile.
set -u
D=.device
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s]"; }
[ -x /tmp/dn/dotnet ] || { mkdir -p /tmp/dn && tar xJf $D/rt.txz -C /tmp/dn; }
export DOTNET_ROOT=/tmp/dn DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_TieredPGO=1
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64
export PLUGINENGINE_CACHE=/tmp/pe-cache
S=$OUT/summary.txt
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 200 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@"; }
row() { grep -E "^\| synthetic|model " | grep -v -- "---"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } >>$S
{ echo "== kit MatMul+Attention, mma 2..512 (defaults otherwise)"; PLUGINENGINE_CUDA_MMA_MIN_TOKENS=2 PLUGINENGINE_CUDA_MMA_MAX_TOKENS=512 kit -method "*MatMul*" -method "*Attention*" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -40; } >>$S
echo "$(el)" >>$S
for m in llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16; do .device/pe bench -m synthetic:$m --backend cuda --parallel 16 -n 4 -r 1 >/dev/null 2>>$OUT/err.txt; done
echo "$(el) benches" >>$S
b() { local label=$1; shift; echo "== $label" >>$S; env "$@" 2>>$OUT/err.txt | row >>$S; echo "$(el)" >>$S; }
P=".device/pe bench -m synthetic:tinyllama:Q4_0,synthetic:tinyllama:F16,synthetic:llama7b:Q4_0 --backend cuda -p 512 -n 1 -r 3"
b "pp512 flash on" $P
b "pp512 flash off" PLUGINENGINE_CUDA_FLASH_ATTN=off $P
b "Q4_0 curve, defaults" .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -n 32 -r 2 --parallel 1,4,16,24,64
b "Q4_K_M curve, defaults" .device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda -n 32 -r 2 --parallel 1,4,16,64
b "Q4_0 x16 PREFETCH=24" PLUGINENGINE_CUDA_DEFINES="MMQ_PREFETCH=24" .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -n 32 -r 2 --parallel 16
b "Q4_K_M x16 PREFETCH_Q4_K=16" PLUGINENGINE_CUDA_DEFINES="MMQ_PREFETCH_Q4_K=16" .device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda -n 32 -r 2 --parallel 16
{ echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 200 .device/pe conformance --backend cuda --batching --exact 2>&1 | tail -2; } >>$S
echo "== profile pp512 tinyllama Q4_0 (flash on)" >>$S
PLUGINENGINE_CUDA_PROFILE=1 .device/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 512 -n 1 -r 1 2>&1 | grep -vE "^\[|^\|" | head -30 >>$S
echo "$(el) done" >>$S

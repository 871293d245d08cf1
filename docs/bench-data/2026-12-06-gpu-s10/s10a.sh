#!/bin/bash
# Session 10, call 1: mmq K split correctness and speed; llama.cpp build in the background.
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
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; git log --oneline -1 2>/dev/null; } >>$S
# llama.cpp (reference): llama-bench and llama-batched-bench, niced, in the background
if [ ! -x /tmp/llama.cpp/build/bin/llama-batched-bench ]; then
 ( export PATH=/usr/local/cuda/bin:$PATH; mkdir -p /tmp/llama.cpp && tar xzf $D/anchors/llama.cpp-c392e50-src.tgz -C /tmp/llama.cpp && cd /tmp/llama.cpp &&
   nice -n 19 cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release >build.log 2>&1 &&
   nice -n 19 cmake --build build -j12 --target llama-bench llama-batched-bench >>build.log 2>&1; echo "llama build exit $? at $(date -u)" >> $OUT/llama-build.txt ) &
fi
echo "$(el) kit" >>$S
{ echo "== kit MatMul, mma 2..512, split auto"; PLUGINENGINE_CUDA_MMA_MIN_TOKENS=2 PLUGINENGINE_CUDA_MMA_MAX_TOKENS=512 kit -method "*MatMul*" 2>&1 | grep -E "Total:|\[FAIL\]" -A3 | head -30;
  echo "== kit MatMul, split 3"; PLUGINENGINE_CUDA_MMA_SPLIT=3 PLUGINENGINE_CUDA_MMA_MIN_TOKENS=2 PLUGINENGINE_CUDA_MMA_MAX_TOKENS=512 kit -method "*MatMul*" 2>&1 | grep -E "Total:|\[FAIL\]" -A3 | head -30;
  echo "== kit MatMul, split 8, MMQ_ROWS=16"; PLUGINENGINE_CUDA_DEFINES="MMQ_ROWS=16" PLUGINENGINE_CUDA_MMA_SPLIT=8 PLUGINENGINE_CUDA_MMA_MIN_TOKENS=2 PLUGINENGINE_CUDA_MMA_MAX_TOKENS=512 kit -method "*MatMul*" 2>&1 | grep -E "Total:|\[FAIL\]" -A3 | head -30; } >>$S 2>&1
echo "$(el) models + first bench" >>$S
for m in Q4_0 Q4_K_M; do .device/pe bench -m synthetic:llama7b:$m --backend cuda --parallel 16 -n 4 -r 1 >/dev/null 2>>$OUT/err.txt; done
echo "$(el) benches" >>$S
b() { local label=$1; shift; echo "== $label" >>$S; env "$@" 2>>$OUT/err.txt | row >>$S; echo "$(el)" >>$S; }
b "Q4_0 defaults (split auto)" .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda --parallel 1,4,16,64 -n 32 -r 2
for sp in 1 2 3 4; do b "Q4_0 x16 MMA_SPLIT=$sp" PLUGINENGINE_CUDA_MMA_SPLIT=$sp .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda --parallel 16 -n 32 -r 2; done
b "Q4_0 x16,24 MMQ_ROWS=16 split auto" PLUGINENGINE_CUDA_DEFINES="MMQ_ROWS=16" .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda --parallel 16,24 -n 32 -r 2
b "Q4_0 x16 MMQ_MIN_BLOCKS=3 split auto" PLUGINENGINE_CUDA_DEFINES="MMQ_MIN_BLOCKS=3" .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda --parallel 16 -n 32 -r 2
b "Q4_K_M defaults" .device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda --parallel 1,4,16,64 -n 32 -r 2
b "Q4_K_M x16 MMA_SPLIT=1" PLUGINENGINE_CUDA_MMA_SPLIT=1 .device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda --parallel 16 -n 32 -r 2
{ echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 200 /tmp/dn/dotnet $D/app/pluginengine.dll conformance --plugins $D/app/plugins.json --backend cuda --batching --exact 2>&1 | tail -4; } >>$S
echo "$(el) done" >>$S
cat $OUT/llama-build.txt >>$S 2>/dev/null

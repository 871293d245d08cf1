#!/bin/bash
# Session 11, call 1: tiled Q4_0 weights (kernels.cu tile_q4_0, matvec/swiglu/mmq on the copy): kit, conformance, A/B against
# weight_layout gguf; llama.cpp built in the background for the side-by-side call.
set -u
D=.device
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s]"; }
[ -x /tmp/dn/dotnet ] || { mkdir -p /tmp/dn && tar xJf $D/rt.txz -C /tmp/dn; }
export DOTNET_ROOT=/tmp/dn DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_TieredPGO=1
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64
export PLUGINENGINE_CACHE=/tmp/pe-cache
S=$OUT/summary.txt
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 240 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@"; }
row() { grep -E "^\| synthetic|model " | grep -v -- "---"; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
if [ ! -x /tmp/llama.cpp/build/bin/llama-batched-bench ]; then
 ( export PATH=/usr/local/cuda/bin:$PATH; mkdir -p /tmp/llama.cpp && tar xzf $D/anchors/llama.cpp-c392e50-src.tgz -C /tmp/llama.cpp && cd /tmp/llama.cpp &&
   nice -n 19 cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release >build.log 2>&1 &&
   nice -n 19 cmake --build build -j10 --target llama-bench llama-batched-bench >>build.log 2>&1; echo "llama build exit $? at $(date -u)" >> $OUT/llama-build.txt ) &
fi
{ echo "== kit MatMul + fused + loader-written, defaults (tiled)"; kit -method "*MatMul*" -method "*Weights_written_like_the_loader*" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -40;
  echo "$(el)"; echo "== kit MatMul, mma 2..512 (mmq at 3 and 40 tokens too)"; PLUGINENGINE_CUDA_MMA_MIN_TOKENS=2 PLUGINENGINE_CUDA_MMA_MAX_TOKENS=512 kit -method "*MatMul_matches*" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -30;
  echo "$(el)"; echo "== kit MatMul, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on kit -method "*MatMul*" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -30; } >>$S 2>&1
echo "$(el) models" >>$S
for m in llama7b:Q4_0 tinyllama:Q4_0; do .device/pe bench -m synthetic:$m --backend cuda -p 1 -n 2 -r 1 >/dev/null 2>>$OUT/err.txt; done
echo "$(el) benches" >>$S
b() { local label=$1; shift; echo "== $label" >>$S; env "$@" 2>>$OUT/err.txt | row >>$S; echo "$(el)" >>$S; }
Q=".device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -n 64 -r 2"
for round in 1 2; do
  b "7B Q4_0 x1,16 tiled" $Q --parallel 1,16
  b "7B Q4_0 x1,16 gguf" PLUGINENGINE_CUDA_WEIGHT_LAYOUT=gguf $Q --parallel 1,16
done
T=".device/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 1 -n 128 -r 3"
b "tiny Q4_0 tg128 tiled" $T
b "tiny Q4_0 tg128 gguf" PLUGINENGINE_CUDA_WEIGHT_LAYOUT=gguf $T
b "7B Q4_0 x16 tiled split 1" PLUGINENGINE_CUDA_MMA_SPLIT=1 $Q --parallel 16
b "7B Q4_0 x16 tiled split 2" PLUGINENGINE_CUDA_MMA_SPLIT=2 $Q --parallel 16
b "7B Q4_0 x1 tiled TQ_UNROLL=2" PLUGINENGINE_CUDA_DEFINES="TQ_UNROLL=2" $Q --parallel 1
b "7B Q4_0 x1 tiled TQ_UNROLL=8" PLUGINENGINE_CUDA_DEFINES="TQ_UNROLL=8" $Q --parallel 1
b "7B Q4_0 x4,64 tiled" $Q --parallel 4,64
{ echo "== profile 7B x16 tiled"; PLUGINENGINE_CUDA_PROFILE=1 .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda --parallel 16 -n 16 -r 1 2>&1 | grep -vE "^\[|^\|" | head -30; } >>$S
{ echo "== profile 7B x1 tiled"; PLUGINENGINE_CUDA_PROFILE=1 .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -p 1 -n 32 -r 1 2>&1 | grep -vE "^\[|^\|" | head -30; } >>$S
{ echo "== conformance q4_0"; timeout 200 .device/pe conformance --backend cuda --types q4_0 2>&1 | grep -E "PASS|FAIL|conformance|passed"; } >>$S
{ echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 200 .device/pe conformance --backend cuda --batching --exact 2>&1 | tail -4; } >>$S
echo "$(el) done" >>$S
cat $OUT/llama-build.txt >>$S 2>/dev/null

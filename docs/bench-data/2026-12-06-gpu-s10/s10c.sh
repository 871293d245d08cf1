#!/bin/bash
# Session 10, call 2: tensor-core prompt attention checks, mmq occupancy sweep, prompt profiles, llama.cpp batched-bench side by side.
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
if [ ! -x /tmp/llama.cpp/build/bin/llama-batched-bench ]; then
 ( export PATH=/usr/local/cuda/bin:$PATH; mkdir -p /tmp/llama.cpp && tar xzf $D/anchors/llama.cpp-c392e50-src.tgz -C /tmp/llama.cpp && cd /tmp/llama.cpp &&
   nice -n 19 cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release >build.log 2>&1 &&
   nice -n 19 cmake --build build -j12 --target llama-bench llama-batched-bench >>build.log 2>&1; echo "llama build exit $? at $(date -u)" >> $OUT/llama-build.txt ) &
fi
{ echo "== kit Attention (flash on)"; kit -method "*Attention*" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -40; } >>$S
echo "$(el)" >>$S
for m in llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16; do .device/pe bench -m synthetic:$m --backend cuda --parallel 16 -n 4 -r 1 >/dev/null 2>>$OUT/err.txt; done
echo "$(el) benches" >>$S
b() { local label=$1; shift; echo "== $label" >>$S; env "$@" 2>>$OUT/err.txt | row >>$S; echo "$(el)" >>$S; }
Q=".device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -n 32 -r 2"
P=".device/pe bench -m synthetic:tinyllama:Q4_0,synthetic:tinyllama:F16,synthetic:llama7b:Q4_0 --backend cuda -p 512 -n 0 -r 3"
b "pp512 flash on" $P
b "pp512 flash off" PLUGINENGINE_CUDA_FLASH_ATTN=off $P
{ echo "== conformance q4_0,f16"; timeout 200 .device/pe conformance --backend cuda --types q4_0,f16 2>&1 | grep -E "PASS|FAIL|conformance"; } >>$S
b "Q4_0 x1,16 defaults" $Q --parallel 1,16
b "Q4_0 x16 MIN_BLOCKS=3 split 1" PLUGINENGINE_CUDA_MMA_SPLIT=1 PLUGINENGINE_CUDA_DEFINES="MMQ_MIN_BLOCKS=3" $Q --parallel 16
b "Q4_0 x16 MIN_BLOCKS=3 split auto" PLUGINENGINE_CUDA_DEFINES="MMQ_MIN_BLOCKS=3" $Q --parallel 16
b "Q4_0 x16 MIN_BLOCKS=4 split auto" PLUGINENGINE_CUDA_DEFINES="MMQ_MIN_BLOCKS=4" $Q --parallel 16
b "Q4_0 x16 ROWS=16 MIN_BLOCKS=3" PLUGINENGINE_CUDA_DEFINES="MMQ_ROWS=16;MMQ_MIN_BLOCKS=3" $Q --parallel 16
b "Q4_0 x16 ROWS=16 MIN_BLOCKS=4" PLUGINENGINE_CUDA_DEFINES="MMQ_ROWS=16;MMQ_MIN_BLOCKS=4" $Q --parallel 16
b "Q4_0 x16 MIN_BLOCKS=3 PREFETCH=16" PLUGINENGINE_CUDA_DEFINES="MMQ_MIN_BLOCKS=3;MMQ_PREFETCH=16" $Q --parallel 16
b "Q4_0 x16 MIN_BLOCKS=3 UNROLL=4" PLUGINENGINE_CUDA_DEFINES="MMQ_MIN_BLOCKS=3;MMQ_UNROLL=4" $Q --parallel 16
K=".device/pe bench -m synthetic:llama7b:Q4_K_M --backend cuda -n 32 -r 2"
b "Q4_K_M x16 MIN_BLOCKS=3" PLUGINENGINE_CUDA_DEFINES="MMQ_MIN_BLOCKS=3" $K --parallel 16
b "Q4_K_M x16 ROWS=16 MIN_BLOCKS=3" PLUGINENGINE_CUDA_DEFINES="MMQ_ROWS=16;MMQ_MIN_BLOCKS=3" $K --parallel 16
echo "== profile pp512 tinyllama" >>$S
PLUGINENGINE_CUDA_PROFILE=1 .device/pe bench -m synthetic:tinyllama:Q4_0 --backend cuda -p 512 -n 0 -r 1 2>&1 | grep -vE "^\[|^\|" | head -40 >>$S
echo "== profile pp512 7b" >>$S
PLUGINENGINE_CUDA_PROFILE=1 .device/pe bench -m synthetic:llama7b:Q4_0 --backend cuda -p 512 -n 0 -r 1 2>&1 | grep -vE "^\[|^\|" | head -40 >>$S
echo "$(el) llama.cpp" >>$S
for i in $(seq 1 60); do [ -f $OUT/llama-build.txt ] && break; sleep 5; done
cat $OUT/llama-build.txt >>$S 2>/dev/null
LB=/tmp/llama.cpp/build/bin
for m in llama7b-Q4_0 llama7b-Q4_K_M; do f=$(ls /tmp/pe-cache/synthetic-$m*.gguf 2>/dev/null | head -1); echo "== llama-batched-bench $f" >>$S
  for fa in 0 1; do timeout 120 $LB/llama-batched-bench -m $f -c 8192 -b 2048 -ub 512 -npp 16 -ntg 32 -npl 1,4,16,64 -ngl 99 -fa $fa 2>&1 | grep -E "^\|" >>$S; done; echo "$(el)" >>$S; done
ls /tmp/pe-cache >>$S
echo "$(el) done" >>$S

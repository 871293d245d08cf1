#!/bin/bash
# Session 12, call 3: F16 decode with several rows a warp (kernels.cu MATVEC_PLAIN_ROWS), the kit's MatMul cases; tuning sweeps on the tiled mmq (kernel defines through PLUGINENGINE_CUDA_DEFINES), prompts through mmq
# up to 512 tokens (mma_max_tokens 512) against cuBLAS, and the batching check with the
# near-tie limit of commit "Batching check: a near-tie is ...".
set -u
NO_LLAMA=1 MODELS="tinyllama:F16 llama7b:Q4_0 tinyllama:Q4_0 llama7b:F16"
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
B=$OUT/bench.txt
pe() { [ $(( $(date +%s) - T0 )) -gt 440 ] && { echo "skipped (time): $*" >>$B; return; }; echo "== $*" >>$B; env "$@" 2>>$OUT/err.txt | grep -E "^\| synthetic" >>$B; el >>$B; }
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 200 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@"; }
{ echo "== kit MatMul + fused (plain-type mat-vecs 4 rows a warp)"; kit -method "*MatMul*" 2>&1 | grep -E "Total:|\[FAIL\]" -A4 | head -30; el; } >>$S
{ echo "== batching (tiled, near-tie limit 0.15)"; timeout 120 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL"; el; } >>$S
while [ ! -e /tmp/models.done ]; do sleep 3; done
# F16 decode with the plain-type mat-vec at 4 rows a warp (call 2 today, 1 row a warp: TinyLlama F16 tg128 540.4 t/s).
pe PLUGINENGINE_CUDA_DEFINES= $D/pe bench -m synthetic:tinyllama:F16 --backend cuda -p 1 -n 128 -r 3
pe PLUGINENGINE_CUDA_DEFINES= $D/pe bench -m synthetic:llama7b:F16 --backend cuda -p 1 -n 64 -r 2
X16="$D/pe bench -m synthetic:llama7b:Q4_0 --backend cuda --parallel 16 -n 64 -r 2"
pe PLUGINENGINE_CUDA_DEFINES= $X16
for d in MMQ_ROWS=16 MMQ_TILED_PREFETCH=8 MMQ_MIN_BLOCKS=2; do pe PLUGINENGINE_CUDA_DEFINES=$d $X16; done
pe PLUGINENGINE_CUDA_DEFINES= $X16
for m in llama7b:Q4_0 tinyllama:Q4_0; do
  for mx in 31 512; do pe PLUGINENGINE_CUDA_MMA_MAX_TOKENS=$mx $D/pe bench -m synthetic:$m --backend cuda -p 512 -n 1 -r 3; done
done
cat $B >>$S

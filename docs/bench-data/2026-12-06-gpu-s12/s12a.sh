#!/bin/bash
# Session 12, call 1: correctness of the tiled Q4_0 mmq (commit fd01a0c) on the GPU: the whole conformance kit for cuda, the
# MatMul cases again with weight_layout gguf and with mma on 2..512 tokens, `conformance` (logits of every type, seed
# regression) and the batching check with each layout; llama.cpp and the models are made meanwhile for call 2 (s12b.sh).
set -u
. docs/bench-data/2026-12-06-gpu-s12/common.sh
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } >>$S
start_background
kit() { PLUGINENGINE_CONFORMANCE_BACKENDS=cuda timeout 300 /tmp/dn/dotnet $D/app/conf/PluginEngine.Conformance.Tests.dll -noColor -parallel none "$@"; }
fails() { grep -E "Total:|\[FAIL\]" -A4 | head -40; }
{ if [ -z "${SKIP_KIT:-}" ]; then echo "== kit, every case, defaults (tiled)"; kit 2>&1 | fails; el
  echo "== kit MatMul, weight_layout gguf"; PLUGINENGINE_CUDA_WEIGHT_LAYOUT=gguf kit -method "*MatMul*" 2>&1 | fails; el
  echo "== kit MatMul, mma on 2..512 tokens"; PLUGINENGINE_CUDA_MMA_MIN_TOKENS=2 PLUGINENGINE_CUDA_MMA_MAX_TOKENS=512 kit -method "*MatMul_matches*" 2>&1 | fails; el; fi
  echo "== conformance (logits of every type, seed regression)"; timeout 240 $D/pe conformance --backend cuda 2>&1 | grep -E "PASS|FAIL|SKIP|passed|failed"; el
  for layout in tiled gguf; do
    echo "== batching, weight_layout $layout"; PLUGINENGINE_CUDA_WEIGHT_LAYOUT=$layout timeout 120 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL"; el
  done
  echo "== batching, mma split 1 (tiled)"; PLUGINENGINE_CUDA_MMA_SPLIT=1 timeout 120 $D/pe conformance --backend cuda --batching 2>&1 | grep -E "PASS|FAIL"; el
  echo "== batching exact, batch_invariant on"; PLUGINENGINE_CUDA_BATCH_INVARIANT=on timeout 120 $D/pe conformance --backend cuda --batching --exact 2>&1 | grep -E "PASS|FAIL"; el
} >>$S 2>&1
# Wait (within the call's limit) for the background work, so that call 2 finds it done.
[ -n "${NO_WAIT:-}" ] || while [ ! -e /tmp/llama.done ] || [ ! -e /tmp/models.done ]; do [ $(( $(date +%s) - T0 )) -gt 560 ] && break; sleep 5; done
{ cat /tmp/llama.done /tmp/models.done 2>&1; tail -3 /tmp/models.err 2>/dev/null; ls -la /tmp/pe-cache/*/ 2>/dev/null | grep gguf; el; } >>$S
cp /tmp/llama.cpp/build.log $OUT/ 2>/dev/null; true

# Sourced by s12a.sh / s12b.sh on the GPU machine, from the repository root (the bundle in .device: scripts/device/README.md).
D=.device
T0=$(date +%s)
el() { echo "[$(( $(date +%s) - T0 ))s]"; }
[ -x /tmp/dn/dotnet ] || { mkdir -p /tmp/dn && tar xJf $D/rt.txz -C /tmp/dn; }
export DOTNET_ROOT=/tmp/dn DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_TieredPGO=1
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64
export PLUGINENGINE_CACHE=/tmp/pe-cache
export PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins.json # the bundle's (opencl and hip disabled), not the checkout's
S=$OUT/summary.txt
MODELS=${MODELS:-"llama7b:Q4_0 llama7b:Q4_K_M tinyllama:Q4_0 tinyllama:F16"}
# llama.cpp (the anchors snapshot, c392e50) with llama-bench and llama-batched-bench, and the four models, made in a process
# session of their own so that they outlive the call that starts them; /tmp/llama.done and /tmp/models.done mark the ends.
start_background() {
  if [ -z "${NO_LLAMA:-}" ] && [ ! -e /tmp/llama.started ] && ! grep -q "exit 0" /tmp/llama.done 2>/dev/null; then touch /tmp/llama.started; rm -f /tmp/llama.done
    setsid bash -c '
      export PATH=/usr/local/cuda/bin:$PATH; mkdir -p /tmp/llama.cpp && tar xzf .device/anchors/llama.cpp-c392e50-src.tgz -C /tmp/llama.cpp && cd /tmp/llama.cpp &&
      cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release >build.log 2>&1 &&
      cmake --build build -j12 --target llama-bench llama-batched-bench >>build.log 2>&1; echo "llama.cpp build exit $? at $(date -u +%T)" >/tmp/llama.done' </dev/null >/dev/null 2>&1 &
  fi
  if [ ! -e /tmp/models.started ]; then touch /tmp/models.started; rm -f /tmp/models.done
    setsid bash -c 'for m in '"$MODELS"'; do .device/pe bench -m synthetic:$m --backend cpu -p 1 -n 1 -r 1 >/dev/null 2>>/tmp/models.err; done
      echo "models at $(date -u +%T)" >/tmp/models.done' </dev/null >/dev/null 2>&1 &
  fi
}
model_file() { find /tmp/pe-cache -name "synthetic-$1-$2-*.gguf" | head -1; } # shape, type (file names: bench/BenchModelSource.cs)

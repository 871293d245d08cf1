#!/usr/bin/env bash
# For users with an AMD GPU or APU: runs, on this machine, what the project could not run without AMD hardware, and
# writes ONE results file to attach to a report (docs/hip.md):
#   1. machine facts (rocminfo/rocm-smi where present, /proc/meminfo, huge page pool) and `pluginengine backends -v`;
#   2. the conformance kit (every non-CPU backend of plugins.json, hip included, against the CPU backend), which holds
#      the seed regression cases;
#   3. the seed regression on hip by hand: a Q4_K_M model with ne0 % 512 != 0 from a read-only file mapping with
#      --host-import on, against owned buffers and against the CPU backend (max |logit diff|);
#   4. bench --backend hip,cpu --memory file,hugepages --host-import off,on on MODEL (default: a synthetic
#      TinyLlama-shaped Q4_0 model).
# Usage, from the repository root with the .NET 10 SDK: scripts/hip/amd-report.sh [MODEL.gguf] [RESULTS_FILE]
# Huge pages: reserve a pool first (as root: echo 4096 > /proc/sys/vm/nr_hugepages for 8 GiB of 2 MiB pages), else
# the hugepages rows are reported as failed with the reason.
set -uo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-synthetic:tinyllama:Q4_0}
RESULTS=${2:-amd-report-$(date -u +%Y%m%d-%H%M%S).txt}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
say() { echo "$*" | tee -a "$RESULTS"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$RESULTS"; return "${PIPESTATUS[0]}"; }

: >"$RESULTS"
say "== PluginEngine AMD report, $(date -u), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "== machine"
run uname -a
command -v rocminfo >/dev/null && rocminfo 2>&1 | grep -E "Marketing Name|Name: +gfx|Compute Unit|Wavefront Size|Device Type" | head -20 | tee -a "$RESULTS"
command -v rocm-smi >/dev/null && rocm-smi --showproductname --showmeminfo vram gtt 2>&1 | head -30 | tee -a "$RESULTS"
grep -E "MemTotal|MemAvailable|HugePages_Total|HugePages_Free|Hugepagesize" /proc/meminfo | tee -a "$RESULTS"
ls -l /dev/kfd 2>&1 | tee -a "$RESULTS"; id | tee -a "$RESULTS"

say "== build"
run dotnet build PluginEngine.sln -c Release -v q --nologo || { say "build failed"; exit 1; }
PE=(dotnet host/bin/Release/net10.0/pluginengine.dll)

say "== backends"
run "${PE[@]}" backends -v

say "== conformance kit (hip against the CPU backend; cuda and opencl too where present)"
run dotnet test tests/PluginEngine.Conformance/PluginEngine.Conformance.csproj -c Release --no-build --logger "console;verbosity=normal"

say "== seed regression on hip: read-only file mapping, --host-import on, ne0 % 512 != 0"
run dotnet run --project scripts/device/modelgen -c Release -- "$WORK" compare >/dev/null
TOKENS=1,450,300,20,99,1000,7,8,2048,4000,13,77,512,600,3100,42,5,900,1234,2222,31,64,128,256,1024,3,999,4095,17,18,19,20
for n in seed-q4_k_m-a4096 seed-q4_k_m-dirty; do
  f=$WORK/$n.gguf
  run "${PE[@]}" logits -m "$f" --tokens "$TOKENS" --all-positions --backend hip --host-import on -v -o "$WORK/$n-import.bin" | grep -iE "import|slide|hip" | head -20
  run "${PE[@]}" logits -m "$f" --tokens "$TOKENS" --all-positions --backend hip --host-import off -o "$WORK/$n-owned.bin" >/dev/null
  run "${PE[@]}" logits -m "$f" --tokens "$TOKENS" --all-positions --backend cpu -o "$WORK/$n-cpu.bin" >/dev/null
  python3 - "$n" "$WORK/$n-import.bin" "$WORK/$n-owned.bin" "$WORK/$n-cpu.bin" <<'PY' | tee -a "$RESULTS"
import array, sys
def load(p):
    a = array.array('f')
    try: a.frombytes(open(p, 'rb').read())
    except OSError: pass
    return a
name, imp, own, cpu = sys.argv[1], load(sys.argv[2]), load(sys.argv[3]), load(sys.argv[4])
def diff(a, b): return max(abs(x - y) for x, y in zip(a, b)) if a and len(a) == len(b) else float('nan')
print(f"{name}: import vs owned max|diff| {diff(imp, own):.3e} (expected 0); hip vs cpu {diff(own, cpu):.3e} (max|cpu| {max(map(abs, cpu)) if cpu else float('nan'):.3e})")
PY
done

say "== bench $MODEL"
run "${PE[@]}" bench -m "$MODEL" --backend hip,cpu --memory file,hugepages --host-import off,on -r 3

say "== done $(date -u): attach $RESULTS to your report"

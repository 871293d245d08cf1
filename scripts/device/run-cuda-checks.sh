#!/usr/bin/env bash
# CUDA backend checks on a GPU machine, against the CPU backend, using a carried build (no SDK needed there).
#
# Layout expected under $DEV (default: .device):
#   rt.tgz         .NET 10 runtime (shared/Microsoft.NETCore.App, host, dotnet), extracted to /tmp/dn
#   app/           framework-dependent publish of host/ + app/plugins/{cpu,cuda}/ + app/plugins.json
#   modelgen/      build of scripts/device/modelgen (writes the generated models)
# Results go to $OUT (default: ./out): report.txt (the summary: per-type max |diff| vs CPU, greedy-text agreement,
# seed regression, tokens/s), log.txt (every command and its output), plans.txt (inspect --plan of the seed models).
# prepare-device-bundle.sh (beside this file) builds $DEV on a machine with the SDK.
set -uo pipefail

DEV=${DEV:-.device}
OUT=${OUT:-./out}
mkdir -p "$OUT"
REPORT=$OUT/report.txt LOG=$OUT/log.txt PLANS=$OUT/plans.txt
: >"$REPORT"; : >"$LOG"; : >"$PLANS"
say() { echo "$*" | tee -a "$REPORT"; }

if [ ! -x /tmp/dn/dotnet ]; then mkdir -p /tmp/dn && tar xzf "$DEV/rt.tgz" -C /tmp/dn || { say "cannot extract $DEV/rt.tgz"; exit 1; }; fi
export DOTNET_ROOT=/tmp/dn DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_TieredPGO=1
export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PLUGINENGINE_CACHE=/tmp/pe-cache   # demo model + compiled kernels (a fresh cache: the first probe compiles)
PLUGINS=$DEV/app/plugins.json
PE=(/tmp/dn/dotnet "$DEV/app/pluginengine.dll")
M=/tmp/pe-models L=/tmp/pe-logits
mkdir -p "$M" "$L"

run() { # run CMD...: logs the command and its output; returns its status
  echo "\$ $*" >>"$LOG"
  "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "[exit $rc]" >>"$LOG"
  return $rc
}

say "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$REPORT"
ls /usr/local/cuda/lib64/libnvrtc.so* 2>/dev/null | head -3 | tee -a "$REPORT"

say "== backends"
"${PE[@]}" backends --plugins "$PLUGINS" 2>&1 | tee -a "$LOG" | grep -iE "cuda|cpu" | head -12 | tee -a "$REPORT"

say "== generating models"
/tmp/dn/dotnet "$DEV/modelgen/modelgen.dll" "$M" compare bench 2>&1 | tee -a "$REPORT"

TOKENS=1,450,300,20,99,1000,7,8,2048,4000,13,77,512,600,3100,42,5,900,1234,2222,31,64,128,256,1024,3,999,4095,17,18,19,20
python_compare() { # python_compare CPU.bin GPU.bin VOCAB LABEL → one line: max |diff|, max |ref|, argmax agreement
python3 - "$@" <<'PY'
import array, sys
a, b, vocab, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
x = array.array('f'); y = array.array('f')
x.frombytes(open(a, 'rb').read()); y.frombytes(open(b, 'rb').read())
if len(x) != len(y) or len(x) == 0:
    print(f"{label}: size mismatch {len(x)} vs {len(y)} floats"); sys.exit(1)
bad = sum(1 for v in y if v != v or v in (float('inf'), float('-inf')))
md = max(abs(p - q) for p, q in zip(x, y)); mr = max(abs(p) for p in x)
rows = len(x) // vocab; agree = 0
for r in range(rows):
    xs = x[r*vocab:(r+1)*vocab]; ys = y[r*vocab:(r+1)*vocab]
    agree += max(range(vocab), key=xs.__getitem__) == max(range(vocab), key=ys.__getitem__)
print(f"{label}: max|diff| {md:.3e}  max|cpu| {mr:.3e}  rel {md/mr if mr else 0:.2e}  argmax agree {agree}/{rows}  non-finite {bad}")
PY
}

say "== logits: cuda vs cpu, $(( $(tr -cd , <<<"$TOKENS" | wc -c) + 1 )) tokens in one batch, every position (batched matmul path)"
for f in "$M"/cmp-*.gguf; do
  n=$(basename "$f" .gguf)
  for kv in f16 f32; do
    extra=(); [ $kv = f32 ] && extra=(--kv-f32)
    [ $kv = f32 ] && [ "$n" != cmp-q4_k_m ] && continue   # the F32 cache once is enough
    run "${PE[@]}" logits --plugins "$PLUGINS" -m "$f" --tokens "$TOKENS" --all-positions "${extra[@]}" --backend cpu -o "$L/$n-$kv-cpu.bin" &&
    run "${PE[@]}" logits --plugins "$PLUGINS" -m "$f" --tokens "$TOKENS" --all-positions "${extra[@]}" --backend cuda -o "$L/$n-$kv-cuda.bin" &&
    python_compare "$L/$n-$kv-cpu.bin" "$L/$n-$kv-cuda.bin" 4096 "$n kv=$kv" | tee -a "$REPORT" || say "$n kv=$kv: FAILED (see log.txt)"
  done
done

say "== logits: one token (mat-vec path, n = 1)"
for f in "$M"/cmp-q4_k_m.gguf "$M"/cmp-q8_0.gguf "$M"/cmp-q4_0.gguf "$M"/cmp-f16.gguf; do
  n=$(basename "$f" .gguf)
  run "${PE[@]}" logits --plugins "$PLUGINS" -m "$f" --tokens 450 --backend cpu -o "$L/$n-1-cpu.bin" &&
  run "${PE[@]}" logits --plugins "$PLUGINS" -m "$f" --tokens 450 --backend cuda -o "$L/$n-1-cuda.bin" &&
  python_compare "$L/$n-1-cpu.bin" "$L/$n-1-cuda.bin" 4096 "$n n=1" | tee -a "$REPORT" || say "$n n=1: FAILED"
done

say "== oracle: cuda on quantized weights vs cpu on the same weights dequantized to F32 by the core's scalar reference"
say "   (the cpu's own quantized path quantizes activations to Q8_0/Q8_K; the cuda kernels keep them in F32)"
for n in cmp-q8_0 cmp-q4_0 cmp-q5_k cmp-q4_k_m; do
  run /tmp/dn/dotnet "$DEV/modelgen/modelgen.dll" --dequantize "$M/$n.gguf" "$M/deq-$n.gguf" &&
  run "${PE[@]}" logits --plugins "$PLUGINS" -m "$M/deq-$n.gguf" --tokens "$TOKENS" --all-positions --backend cpu -o "$L/$n-deq-cpu.bin" &&
  python_compare "$L/$n-deq-cpu.bin" "$L/$n-f16-cuda.bin" 4096 "$n batch vs f32 oracle" | tee -a "$REPORT" || say "$n oracle: FAILED"
  if [ -f "$L/$n-1-cuda.bin" ]; then
    run "${PE[@]}" logits --plugins "$PLUGINS" -m "$M/deq-$n.gguf" --tokens 450 --backend cpu -o "$L/$n-deq-1-cpu.bin" &&
    python_compare "$L/$n-deq-1-cpu.bin" "$L/$n-1-cuda.bin" 4096 "$n n=1 vs f32 oracle" | tee -a "$REPORT"
  fi
  rm -f "$M/deq-$n.gguf"
done

say "== partial offload: -ngl 2 (layers 0-1 on cuda, 2-3 and the output on the cpu; activations cross through Download/Upload)"
run "${PE[@]}" logits --plugins "$PLUGINS" -m "$M/cmp-f16.gguf" --tokens "$TOKENS" --all-positions --backend cuda -ngl 2 -v -o "$L/ngl2-cuda.bin" &&
python_compare "$L/cmp-f16-f16-cpu.bin" "$L/ngl2-cuda.bin" 4096 "cmp-f16 -ngl 2 vs cpu" | tee -a "$REPORT" || say "-ngl 2: FAILED"

say "== greedy generation (decode path with the KV cache): same text on cpu and cuda?"
for f in "$M"/cmp-q4_k_m.gguf "$M"/cmp-q8_0.gguf "$M"/cmp-f16.gguf; do
  n=$(basename "$f" .gguf)
  for b in cpu cuda; do
    "${PE[@]}" run --plugins "$PLUGINS" -m "$f" -p "Once upon a time" -n 48 --temp 0 --backend $b >"$L/$n-$b.txt" 2>"$L/$n-$b.err"
    cat "$L/$n-$b.txt" "$L/$n-$b.err" >>"$LOG"
  done
  if cmp -s "$L/$n-cpu.txt" "$L/$n-cuda.txt"; then say "$n: identical greedy text (48 tokens)"; else say "$n: texts differ: cpu '$(head -c 120 "$L/$n-cpu.txt" | tr '\n' ' ')' / cuda '$(head -c 120 "$L/$n-cuda.txt" | tr '\n' ' ')'"; fi
done

say "== seed regression: read-only file mapping, --gpu-host-import on (discrete GPU: forced, logged)"
for f in "$M"/seed-q4_k_m-a4096.gguf "$M"/seed-q4_k_m-dirty.gguf; do
  n=$(basename "$f" .gguf)
  { echo "### inspect --plan --gpu-host-import on --backend cuda $n"; "${PE[@]}" inspect --plugins "$PLUGINS" "$f" --plan --all --backend cuda --gpu-host-import on 2>&1 | sed -n '/Tensors/,$p'; } >>"$PLANS"
  grep -ciE "import" "$PLANS" >/dev/null && say "$n plan: $(grep -ciE '\bimported\b' "$PLANS") lines mention imported, $(grep -ciE '\b(owned|copied)\b' "$PLANS") owned/copied (cumulative; see plans.txt)"
  run "${PE[@]}" logits --plugins "$PLUGINS" -m "$f" --tokens "$TOKENS" --all-positions --backend cuda --gpu-host-import on -v -o "$L/$n-import.bin"; ri=$?
  run "${PE[@]}" logits --plugins "$PLUGINS" -m "$f" --tokens "$TOKENS" --all-positions --backend cuda --gpu-host-import off -o "$L/$n-owned.bin"; ro=$?
  run "${PE[@]}" logits --plugins "$PLUGINS" -m "$f" --tokens "$TOKENS" --all-positions --backend cpu -o "$L/$n-cpu.bin"
  say "$n: import run exit $ri, owned run exit $ro"
  if [ $ri = 0 ] && [ $ro = 0 ]; then
    if cmp -s "$L/$n-import.bin" "$L/$n-owned.bin"; then say "$n: import logits == owned logits (bit-identical)"; else python_compare "$L/$n-owned.bin" "$L/$n-import.bin" 4096 "$n import vs owned" | tee -a "$REPORT"; fi
    python_compare "$L/$n-cpu.bin" "$L/$n-import.bin" 4096 "$n import vs cpu" | tee -a "$REPORT"
  fi
done

say "== timings (run --temp 0, llama.cpp-style timing lines)"
for f in "$M"/bench-q4_k_m.gguf "$M"/bench-q8_0.gguf; do
  n=$(basename "$f" .gguf)
  for b in cuda cpu; do
    say "-- $n $b"
    "${PE[@]}" run --plugins "$PLUGINS" -m "$f" -p "The quick brown fox jumps over the lazy dog and keeps running through the forest until night falls over the hills" \
      -n 128 --temp 0 --backend $b >"$L/t.txt" 2>"$L/t.err"; echo "exit $?" >>"$LOG"
    cat "$L/t.err" >>"$LOG"
    grep -iE "eval time|load time|prompt|tokens per second|t/s" "$L/t.err" "$L/t.txt" | sed 's/^[^:]*://' | tee -a "$REPORT"
  done
done
say "-- bench-q4_k_m cuda, long prompt (batched path)"
LONG=$(python3 -c 'print("the quick brown fox jumps over the lazy dog " * 40)')
"${PE[@]}" run --plugins "$PLUGINS" -m "$M/bench-q4_k_m.gguf" -p "$LONG" -n 32 --temp 0 --backend cuda >"$L/t.txt" 2>"$L/t.err"; cat "$L/t.err" >>"$LOG"
grep -iE "eval time|load time" "$L/t.err" | tee -a "$REPORT"
say "== done"

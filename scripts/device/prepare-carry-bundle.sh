#!/usr/bin/env bash
# A trimmed bundle for a GPU machine reached through a tool that carries at most 64 MiB (the .NET runtime alone is 106 MiB
# unpacked), into DEST (default: .device, ignored by git). What the session scripts under docs/bench-data/ source through
# docs/bench-data/2026-12-06-gpu-s12/common.sh:
#   DEST/rt.txz      the .NET runtime of this machine (Microsoft.NETCore.App + Microsoft.AspNetCore.App, host/, dotnet), xz
#   DEST/pe          runs the host with that runtime, unpacked in /tmp/dn by common.sh
#   DEST/app/        Release publish of the host with plugins/cpu and plugins/cuda only (plugins.json lists those two)
#   DEST/app/conf/   the conformance kit (finds DEST/app/plugins.json above itself)
# With BASE=<commit>: also DEST/app/plugins/cuda-base (the CUDA plugin built at that commit in a worktree under /tmp) and
# DEST/app/plugins-base.json naming it "cuda", so one call can compare the change with where it started:
#   PLUGINENGINE_PLUGINS=$PWD/.device/app/plugins-base.json .device/pe bench ...
# Usage (from the repository root, after `dotnet build PluginEngine.sln -c Release`): [BASE=75e9659] scripts/device/prepare-carry-bundle.sh [DEST]
set -euo pipefail
DEST=${1:-.device}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOTNET_HOME=${DOTNET_HOME:-$(dirname "$(readlink -f "$(command -v dotnet)")")}
rm -rf "$DEST/app"
mkdir -p "$DEST/app/plugins"
dotnet publish "$ROOT/host" -c Release -o "$DEST/app" --nologo -v q
for p in cpu cuda; do cp -r "$ROOT/plugins/$p" "$DEST/app/plugins/"; done
plugins_json() { # $1: the CUDA plugin's folder
  cat <<EOF
{
  "preference": ["cuda", "cpu"],
  "plugins": [
    { "name": "cpu", "assembly": "plugins/cpu/PluginEngine.Backends.Cpu.dll", "enabled": true, "options": { "threads": 0 } },
    { "name": "cuda", "assembly": "plugins/$1/PluginEngine.Backends.Cuda.dll", "enabled": true, "options": { "devices": "all" } }
  ]
}
EOF
}
plugins_json cuda >"$DEST/app/plugins.json"
if [ -n "${BASE:-}" ]; then
  W=/tmp/pe-base-$BASE
  [ -d "$W" ] || git -C "$ROOT" worktree add -f "$W" "$BASE" >/dev/null
  dotnet build "$W/backends/Cuda" -c Release --nologo -v q >/dev/null
  rm -rf "$DEST/app/plugins/cuda-base" && cp -r "$W/plugins/cuda" "$DEST/app/plugins/cuda-base"
  plugins_json cuda-base >"$DEST/app/plugins-base.json"
fi
dotnet build "$ROOT/tests/PluginEngine.Conformance.Tests" -c Release -o "$DEST/app/conf" --nologo -v q
rm -rf "$DEST"/app/conf/plugins "$DEST"/app/conf/plugins.json   # the kit must use the bundle's plugins.json, one level up
find "$DEST" \( -name '*.pdb' -o -name '*.xml' \) -delete
[ -f "$DEST/rt.txz" ] || tar cJf "$DEST/rt.txz" -C "$DOTNET_HOME" shared/Microsoft.NETCore.App shared/Microsoft.AspNetCore.App host dotnet
printf '#!/bin/bash\nexec /tmp/dn/dotnet "$(dirname "$0")/app/pluginengine.dll" "$@"\n' >"$DEST/pe" && chmod +x "$DEST/pe"
du -sh "$DEST"

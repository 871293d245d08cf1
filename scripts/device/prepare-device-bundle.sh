#!/usr/bin/env bash
# Builds what run-gpu-session.sh needs on a GPU machine that has no .NET SDK, into DEST (default: .device):
#   DEST/rt.tgz     the .NET runtime of this machine (shared/Microsoft.NETCore.App, host/, dotnet)
#   DEST/app/       framework-dependent Release publish of the host, with plugins/{cpu,cuda,opencl}/ and plugins.json
#   DEST/app/conf/  the conformance kit (an xunit v3 executable); it finds DEST/app/plugins.json above itself
#   DEST/modelgen/  the model generator
#   DEST/run-gpu-session.sh and the probe scripts
#   DEST/hip-shim/  the HIP-on-CUDA shim's sources and run-hip-on-cuda.sh (the HIP plugin on an NVIDIA GPU; docs/hip.md)
# Usage (from the repository root): scripts/device/prepare-device-bundle.sh [DEST]
set -euo pipefail
DEST=${1:-.device}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOTNET_HOME=${DOTNET_HOME:-$(dirname "$(readlink -f "$(command -v dotnet)")")}
rm -rf "$DEST/app" "$DEST/modelgen"
mkdir -p "$DEST/app/plugins"
dotnet publish "$ROOT/host" -c Release -o "$DEST/app" --nologo -v q
# Building the host in Release deployed the plugins into $ROOT/plugins/<name>/; ship those beside the host.
for p in cpu cuda hip opencl; do cp -r "$ROOT/plugins/$p" "$DEST/app/plugins/"; done
cp "$ROOT/plugins.json" "$DEST/app/plugins.json"
dotnet build "$ROOT/scripts/device/modelgen" -c Release -o "$DEST/modelgen" --nologo -v q
dotnet build "$ROOT/tests/PluginEngine.Conformance.Tests" -c Release -o "$DEST/app/conf" --nologo -v q
[ -f "$DEST/rt.tgz" ] || tar czf "$DEST/rt.tgz" -C "$DOTNET_HOME" shared/Microsoft.NETCore.App shared/Microsoft.AspNetCore.App host dotnet
cp "$ROOT/scripts/device/run-gpu-session.sh" "$ROOT/scripts/device/probe-host-register.py" \
   "$ROOT/scripts/device/measure-read-bandwidth.py" "$ROOT/scripts/device/compare-host-register.py" "$ROOT/scripts/device/cuda_ctypes.py" "$DEST/"
rm -rf "$DEST/hip-shim" && mkdir -p "$DEST/hip-shim" && cp "$ROOT"/scripts/hip-shim/*.c "$ROOT"/scripts/hip-shim/*.sh "$DEST/hip-shim/"
rm -f "$DEST"/app/*.pdb "$DEST"/app/plugins/*/*.pdb "$DEST"/modelgen/*.pdb "$DEST"/app/conf/*.pdb
rm -rf "$DEST"/app/conf/plugins "$DEST"/app/conf/plugins.json   # the kit must use the bundle's plugins.json, one level up
du -sh "$DEST"

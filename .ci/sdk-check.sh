#!/usr/bin/env bash
# The backend author's path, end to end, from packages only: packs the PluginEngine packages into the local folder feed
# artifacts/packages/, then in a temporary folder OUTSIDE the repository (no project references, a fresh NuGet cache so only
# the just-packed PluginEngine packages are used) creates a backend with `dotnet new pluginengine-backend`, builds it, runs
# its generated tests (the conformance kit against the new plugin), installs the PluginEngine.Cli tool from the feed and
# runs `pluginengine backends`, `pluginengine run --backend <new>` and `pluginengine conformance --backend <new>` with it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
feed="$repo/artifacts/packages"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

step() { printf '\n== sdk-check: %s\n' "$*"; }

step "pack (version $(sed -n 's:.*<PluginEngineVersion>\(.*\)</PluginEngineVersion>.*:\1:p' build/Packaging.props)) into $feed"
rm -rf "$feed"
dotnet build backends/Cpu/PluginEngine.Backends.Cpu.csproj -c Release -v q --nologo   # deploys plugins/cpu/, which two packages carry
for project in abstractions/PluginEngine.Abstractions.csproj core/PluginEngine.Core.csproj tests/PluginEngine.Conformance/PluginEngine.Conformance.csproj \
               templates/PluginEngine.Templates.csproj host/PluginEngine.Host.csproj; do
  dotnet pack "$project" -c Release -v q --nologo
done
ls "$feed"

work=$(mktemp -d "${TMPDIR:-/tmp}/pluginengine-sdk-check.XXXXXX")
case "$work" in "$repo"/*) echo "temporary folder $work is inside the repository" >&2; exit 1 ;; esac
trap 'rm -rf "$work"' EXIT
export NUGET_PACKAGES="$work/nuget-cache"
cat >"$work/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="pluginengine-local" value="$feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
  <packageSourceMapping>
    <packageSource key="pluginengine-local"><package pattern="PluginEngine.*" /></packageSource>
    <packageSource key="nuget.org"><package pattern="*" /></packageSource>
  </packageSourceMapping>
</configuration>
XML
cd "$work"

step "dotnet new pluginengine-backend -n Acme (in $work)"
dotnet new install "$feed"/PluginEngine.Templates.*.nupkg --debug:custom-hive "$work/hive" >/dev/null
dotnet new pluginengine-backend -n Acme -o Acme --debug:custom-hive "$work/hive"
cd Acme

step "build and run the generated tests (the conformance kit against acme)"
dotnet build Acme.Tests/Acme.Tests.csproj -v q --nologo
set +e
dotnet test Acme.Tests/Acme.Tests.csproj --no-build 2>&1 | tee "$work/acme-tests.log" | grep -E '^(Passed|Failed)!|\[FAIL\]'
status=${PIPESTATUS[0]}
set -e
[ "$status" = 0 ] || { tail -60 "$work/acme-tests.log"; exit "$status"; }
grep -q 'Passed!' "$work/acme-tests.log"
if [ -e Acme/bin/Debug/net10.0/PluginEngine.Abstractions.dll ]; then echo "the plugin's output carries PluginEngine.Abstractions.dll" >&2; exit 1; fi

step "the tool: dotnet tool install PluginEngine.Cli from the feed"
dotnet tool install PluginEngine.Cli --tool-path "$work/tools" --configfile "$work/nuget.config" >/dev/null
plugins="$work/Acme/Acme.Tests/bin/Debug/net10.0/plugins.json"
"$work/tools/pluginengine" backends --plugins "$plugins" | tee "$work/backends.txt"
grep -E 'acme .*loaded' "$work/backends.txt" >/dev/null
"$work/tools/pluginengine" run --backend acme --plugins "$plugins" -p "Hello" -n 8 --seed 1 2>&1 | tee "$work/run.txt"
grep -q 'op fallback: acme runs on cpu' "$work/run.txt"
grep -q 'cpu fallback ops = ' "$work/run.txt"
step "pluginengine conformance --backend acme (whole models vs cpu: F32 runs acme's own matmuls, Q8_0 falls back)"
"$work/tools/pluginengine" conformance --backend acme --plugins "$plugins" --types f32,q8_0
step "ok"

#!/usr/bin/env bash
# Build the one-folder app (dist/rlhf-workbench/) and check it: size, build time, start-up time and
# the frozen smoke test (offscreen, in a fresh per-user folder, with the bundled model).
#
#   scripts/build_bundle.sh            set up .venv (+ PyInstaller), build, measure, smoke-test
#   RLHF_BUNDLE_SKIP_SMOKE=1 ...       build and measure only
#   RLHF_BUNDLE_COLD=1 ...             drop the page cache before the first start (root only)
#   RLHF_BUNDLE_ARCHIVE=1 ...          also pack dist/<name>-<version>-linux-<arch>.tar.gz to hand out
#
# Fails if the build or the smoke test fails. A JSON summary goes to dist/build-report.json.
# build/ and dist/ are git-ignored. On a 2-core machine the build takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RLHF_EXTRAS=package bash scripts/setup.sh
PY="$ROOT/.venv/bin/python"
NAME=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["name"])')
APP_DIR="$ROOT/dist/$NAME"
EXE="$APP_DIR/$NAME"

# Reproducible inputs: fixed hash seed, timestamps from the last commit.
export PYTHONHASHSEED=0
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
export QT_QPA_PLATFORM=offscreen  # the build imports Qt modules to inspect them; no display needed

echo "build_bundle: building $NAME (PyInstaller $("$PY" -m PyInstaller --version))"
start=$(date +%s.%N)
cpu_before=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat 2>/dev/null || echo 0)  # this shell + waited-for children
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
  --workpath "$ROOT/build" --distpath "$ROOT/dist" pyinstaller.spec
end=$(date +%s.%N)
cpu_after=$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat 2>/dev/null || echo 0)
build_s=$(awk "BEGIN {printf \"%.1f\", $end - $start}")
build_cpu_s=$(( (cpu_after - cpu_before) / $(getconf CLK_TCK) ))

size_mb() { du -sb "$1" | awk '{printf "%.0f", $1 / 1000000}'; }
total_mb=$(size_mb "$APP_DIR")
gguf=$(find "$APP_DIR" -name '*.gguf' -print -quit)
gguf_mb=$([ -n "$gguf" ] && size_mb "$gguf" || echo 0)
without_mb=$(( total_mb - gguf_mb ))
torch_mb=$(size_mb "$APP_DIR/_internal/torch" 2>/dev/null || echo 0)
files=$(find "$APP_DIR" -type f | wc -l)
echo "build_bundle: built $APP_DIR in ${build_s%.*} s (CPU ${build_cpu_s} s; load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo "build_bundle: size ${total_mb} MB (${without_mb} MB without the ${gguf_mb} MB model; torch ${torch_mb} MB; ${files} files)"

# Start-up: process start to the shown window, offscreen, fresh per-user folder; first run and second.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
startup() {  # prints the app's JSON line; on failure says so (the smoke test below then shows why)
  RLHF_WORKBENCH_HOME="${2:-$home}" "$EXE" --startup-time $1 > "$home/startup.out" 2> "$home/startup.err" \
    && tail -1 "$home/startup.out" || { echo "build_bundle: --startup-time FAILED:" >&2; tail -5 "$home/startup.err" >&2; echo null; }
}
"$PY" -c "from rlhf_core.store import Project; Project.create('$home/startup.rlhf', name='Startup').close()"
if [ "${RLHF_BUNDLE_COLD:-0}" = "1" ] && [ -w /proc/sys/vm/drop_caches ]; then
  sync; echo 3 > /proc/sys/vm/drop_caches  # a truly cold start: nothing of the bundle in the page cache
  echo "build_bundle: dropped the page cache before the first start"
fi
first=$(startup "--project $home/startup.rlhf")
second=$(startup "--project $home/startup.rlhf")
# a person's very first start: no recent project, so the demo project is created (its runs start)
first_start=$(startup "" "$home/fresh")
echo "build_bundle: start-up to window, existing project, first run:  $first"
echo "build_bundle: start-up to window, existing project, second run: $second"
echo "build_bundle: start-up to window, first start (creates the demo project): $first_start"

smoke='"skipped"'; smoke_s=0
if [ "${RLHF_BUNDLE_SKIP_SMOKE:-0}" != "1" ]; then
  smoke_home=$(mktemp -d)
  echo "build_bundle: frozen smoke test (fresh per-user folder, bundled model converted on first use)"
  s0=$(date +%s.%N)
  set +e
  RLHF_WORKBENCH_HOME="$smoke_home" "$EXE" --smoke-test > "$home/smoke.out" 2> "$home/smoke.err"
  rc=$?
  set -e
  s1=$(date +%s.%N)
  smoke_s=$(awk "BEGIN {printf \"%.1f\", $s1 - $s0}")
  rm -rf "$smoke_home"
  if [ $rc -ne 0 ]; then
    echo "build_bundle: FROZEN SMOKE TEST FAILED (exit $rc)" >&2
    tail -n 60 "$home/smoke.err" >&2
    tail -n 5 "$home/smoke.out" >&2
    exit 1
  fi
  smoke=$(tail -1 "$home/smoke.out")
  echo "build_bundle: frozen smoke test passed in ${smoke_s%.*} s: $smoke"
fi

archive_mb=null
if [ "${RLHF_BUNDLE_ARCHIVE:-0}" = "1" ]; then  # the file to hand to people: unpack and double-click
  VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
  archive="$ROOT/dist/$NAME-$VERSION-linux-$(uname -m).tar.gz"
  tar -C "$ROOT/dist" -czf "$archive" "$NAME"
  archive_mb=$(size_mb "$archive")
  echo "build_bundle: archive $archive (${archive_mb} MB)"
fi

cat > "$ROOT/dist/build-report.json" <<EOF
{"name": "$NAME", "build_seconds": $build_s, "build_cpu_seconds": $build_cpu_s, "size_mb": $total_mb, "size_without_model_mb": $without_mb,
 "model_mb": $gguf_mb, "torch_mb": $torch_mb, "files": $files,
 "startup_first": ${first:-null}, "startup_second": ${second:-null}, "startup_first_start": ${first_start:-null},
 "archive_mb": $archive_mb, "smoke_seconds": $smoke_s, "smoke": $smoke}
EOF
echo "build_bundle: summary in dist/build-report.json"

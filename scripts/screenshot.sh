#!/usr/bin/env bash
# Take a screenshot of the real app window under Xvfb (for the README and for checking views).
#   scripts/screenshot.sh OUT.png [SECONDS] [app arguments…]
# e.g. scripts/screenshot.sh docs/images/main-window.png 12 --demo --page runs
# The packaged app instead of the source tree: RLHF_APP=dist/rlhf-workbench/rlhf-workbench scripts/screenshot.sh …
# Needs xvfb and imagemagick (scripts/setup.sh installs them when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; wait_s=${2:-10}; shift $(( $# >= 2 ? 2 : $# ))
command -v Xvfb >/dev/null || { echo "screenshot: Xvfb is not installed (apt-get install xvfb)" >&2; exit 1; }
display=":$(( 90 + RANDOM % 100 ))"
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
xvfb_pid=$!
app_pid=""
cleanup() { [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null; kill "$xvfb_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
sleep 1
if [ -n "${RLHF_APP:-}" ]; then
  DISPLAY=$display QT_QPA_PLATFORM=xcb "$RLHF_APP" "$@" &
else
  DISPLAY=$display QT_QPA_PLATFORM=xcb .venv/bin/python -m app "$@" &
fi
app_pid=$!
sleep "$wait_s"
mkdir -p "$(dirname "$out")"
DISPLAY=$display import -window root "$out"
echo "screenshot: wrote $out"

#!/usr/bin/env bash
# Launch RLHF Workbench on its built-in demo project (sets up .venv first).
#   scripts/run.sh                 the demo project
#   scripts/run.sh --project P     another project folder (any `python -m app` arguments work)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "${QT_QPA_PLATFORM:-}" ]; then
  echo "run: no display found (DISPLAY/WAYLAND_DISPLAY unset). On a headless machine try:" >&2
  echo "     xvfb-run -a scripts/run.sh     or     QT_QPA_PLATFORM=offscreen scripts/run.sh --smoke-test" >&2
  exit 1
fi
if [ $# -eq 0 ]; then set -- --demo; fi
exec .venv/bin/python -m app "$@"

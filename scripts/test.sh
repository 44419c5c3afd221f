#!/usr/bin/env bash
# Run the whole test suite (sets up .venv first; fast when it is already up to date).
#   scripts/test.sh              all tests
#   scripts/test.sh tests/core   only the Qt-free core tests (any pytest arguments work)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Run the whole test suite (sets up .venv first; fast when it is already up to date), then build the
# packaged app and run its smoke test (scripts/build_bundle.sh).
#   scripts/test.sh              all tests, then the bundle build + frozen smoke test (what CI runs)
#   scripts/test.sh tests/core   only the Qt-free core tests (any pytest arguments work; no bundle)
#   RLHF_SKIP_BUNDLE=1 scripts/test.sh    all tests, no bundle
#   RLHF_SKIP_BUNDLE=0 scripts/test.sh tests/app   some tests, and the bundle anyway
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
# The bundle is built after a full run only, unless RLHF_SKIP_BUNDLE says otherwise.
skip_bundle="${RLHF_SKIP_BUNDLE:-$([ $# -gt 0 ] && echo 1 || echo 0)}"
.venv/bin/python -m pytest "$@"
if [ "$skip_bundle" != "1" ]; then
  echo "test.sh: building the packaged app and running its frozen smoke test (RLHF_SKIP_BUNDLE=1 skips this)"
  bash scripts/build_bundle.sh
fi

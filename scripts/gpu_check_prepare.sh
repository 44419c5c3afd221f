#!/usr/bin/env bash
# Prepare what the GPU check (benchmarks/gpu_check.py) needs on the lent GPU machine, which cannot download
# anything and receives at most 64 MiB per call: the Python packages its image lacks, as wheels, and the
# bundled model's GGUF file cut into parts that each fit one call. Writes .gpu/ (ignored by git).
# How the parts travel: DEVELOPERS.md, "The GPU check".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=.gpu
rm -rf "$OUT"; mkdir -p "$OUT/whl"
# the image has torch, transformers, accelerate, peft, pandas, pyarrow, xxhash, pyyaml; not these (versions as in .venv)
want="trl datasets dill multiprocess sqlite-utils sqlite-fts4 click-default-group gguf transformers"
specs=""
for name in $want; do
  version=$($PY -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
  specs="$specs $name==$version"
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$OUT/whl" $specs
gguf=$($PY -c "from rlhf_core.text.model import bundled_gguf_path; print(bundled_gguf_path())")
# three parts: repo (~13 MB) + one part (~33 MB) + the wheels (~15 MB) stay under one call's 64 MiB
split -n 3 -d "$gguf" "$OUT/part-"
basename "$gguf" > "$OUT/gguf-name"
du -sh "$OUT"/* | sed 's/^/  /'
echo "gpu_check_prepare: done; see DEVELOPERS.md, 'The GPU check'"

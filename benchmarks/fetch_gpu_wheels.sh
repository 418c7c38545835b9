#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels benchmarks/gpu.sh needs on a GPU machine that
# has torch but no registry: diffusers, lpips, pydantic and what they need beyond a torch image.
set -euo pipefail
dest=${1:-benchmarks/wheels}
mkdir -p "$dest"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
  "${plat[@]}" -d "$dest" \
  diffusers==0.42.1 lpips==0.1.4 pydantic==2.14.4 "pydantic-core==$(python3 - <<'PY'
import importlib.metadata as m
print(next(r.split("==")[1].split(";")[0].strip() for r in m.requires("pydantic") if r.startswith("pydantic-core==")))
PY
)" annotated-types typing-inspection importlib-metadata
ls "$dest"

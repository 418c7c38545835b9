#!/usr/bin/env bash
# MDPS sampler benchmark on one GPU (H200 class) that may have only torch and no package registry.
#   bash benchmarks/fetch_gpu_wheels.sh        # here: wheels into benchmarks/wheels/
#   bash benchmarks/gpu.sh                     # there: ~5 min; prints one table, last line "speedup: X"
#   DRY_RUN=1 bash benchmarks/gpu.sh           # on a CPU: the same script at a tiny size
# Paper size: 256 px, the ≈33 M-parameter UNet, T'=200, stride 20, ρ=30, n=4, batch 8, random weights.
# Rows: the official-structure fp32 reference vs ours fp32 vs ours bf16 (and compiled variants).
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${WHEELS:-benchmarks/wheels}
py=${PYTHON:-python3}
if ! "$py" -c "import diffusers, lpips, pydantic" 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/mdps-site "$wheels"/*.whl
  export PYTHONPATH=/tmp/mdps-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
if [ -n "${DRY_RUN:-}" ]; then
  exec "$py" benchmarks/sampler.py --prior paper --image-size 32 --device cpu --batch 2 --n-samples 2 \
    --start-step 60 --reps 1 --variants fp32 bf16
fi
"$py" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
exec "$py" benchmarks/sampler.py --prior paper --image-size 256 --device cuda --batch 8 --n-samples 4 \
  --start-step 200 --stride 20 --rho 30 --reps 3 --variants fp32 channels_last bf16 bf16_channels_last compile bf16_compile

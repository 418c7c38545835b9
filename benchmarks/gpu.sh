#!/usr/bin/env bash
# MDPS sampler benchmark on one GPU (H200 class) that has torch (2.11 there) but no registry and no
# diffusers, lpips or pydantic: those come as wheels, fetched here and carried there (git-ignored).
#   bash benchmarks/fetch_gpu_wheels.sh     # here, once: wheels into benchmarks/wheels/
#   device run, carry ["benchmarks/wheels"], timeout_s 540:
#     bash benchmarks/gpu.sh eager          # ~6 min: calibration on the device, peaks, then the eager rows
#     bash benchmarks/gpu.sh compile        # ~4 min: the torch.compile rows, in a second command
#   DRY_RUN=1 bash benchmarks/gpu.sh eager  # on a CPU (CI): the same script at a tiny size
# Paper setting: 256 px, the 32.95 M-parameter UNet, T'=200, stride 20, rho=30, random weights; n = 1 and
# n = 4; the reference and the exact fp32 rows (TF32 off) at batch 8, the TF32 and bf16 rows at 8/16/32.
# Peaks: the mean of 10 products of 8192^3 after warm-up. Last line: "speedup: X".
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-eager}
wheels=${WHEELS:-benchmarks/wheels}
py=${PYTHON:-python3}
if ! "$py" -c "import diffusers, lpips, pydantic" 2>/dev/null; then
  ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "no wheels in $wheels: run benchmarks/fetch_gpu_wheels.sh here and carry $wheels" >&2; exit 2; }
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/mdps-site "$wheels"/*.whl
  export PYTHONPATH=/tmp/mdps-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
case "$mode" in
  eager) variants=(fp32 channels_last tf32 bf16 bf16_channels_last) ;;
  compile) variants=(compile bf16_compile) ;;
  *) echo "expected mode eager or compile, got $mode" >&2; exit 2 ;;
esac
if [ -n "${DRY_RUN:-}" ]; then
  [ "$mode" = eager ] && "$py" benchmarks/gpu_calibrate.py --device cpu --images 8
  exec "$py" benchmarks/sampler.py --prior paper --image-size 32 --device cpu --batch 2 3 --n-samples 1 2 \
    --start-step 40 --stride 20 --reps 1 --peak-size 256 --variants "${variants[@]}"
fi
"$py" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
[ "$mode" = eager ] && "$py" benchmarks/gpu_calibrate.py --device cuda  # calibration on the device, first
exec "$py" benchmarks/sampler.py --prior paper --image-size 256 --device cuda --batch 8 16 32 --n-samples 1 4 \
  --start-step 200 --stride 20 --rho 30 --reps 3 --variants "${variants[@]}"

"""The prepared GPU benchmark, run on the CPU at a tiny size: the one command a lent GPU gets works (issue 18)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_script_dry_run_prints_every_row_within_its_tolerance() -> None:
    env = {**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "eager"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"matmul peak \(mean of 10 after warm-up\): fp32 [\d.]+ TFLOP/s at 256\^3 \(TF32 off\), "
                     r"bf16 [\d.]+ TFLOP/s at \d+\^3", out)
    assert re.search(r"theoretical fp32 peak: [\d.]+ TFLOP/s = \d+ cores x [\d.]+ GHz", out)
    lines = [line for line in out.splitlines() if re.match(r"\s*\d+\s+\d+ (ours|reference)", line)]
    grid = {tuple(line.split()[i] for i in (0, 1, 3)) for line in lines}
    for n in ("1", "2"):
        assert {(n, "2", "(official"), (n, "2", "fp32"), (n, "2", "channels_last")} <= grid  # exact rows: batch 2
        assert {(n, b, v) for b in ("2", "3") for v in ("tf32", "bf16", "bf16_channels_last")} <= grid
        assert (n, "3", "fp32") not in grid
    exact = [line for line in lines if line.split()[3] in ("fp32", "channels_last")]
    assert len(exact) == 4 and all("(within 1e-3 of the reference)" in line for line in exact)
    assert re.search(r"FLOPs per image: ours [\d.]+ GFLOP, reference [\d.]+ GFLOP", out)
    ours, ref = map(float, re.findall(r"ours ([\d.]+) GFLOP, reference ([\d.]+) GFLOP", out)[0])
    assert ref > ours  # the reference's redundant no-grad forward is counted as its own FLOPs
    assert out.strip().splitlines()[-1].startswith("speedup: ")
    assert re.search(r"^calibrate: device=cpu seconds=[\d.]+ certified_fpr=[\d.]+ level_features=ordinary ok$", out,
                     re.M)  # the device's calibration check runs first


def test_the_gpu_script_names_its_modes_and_its_missing_wheels(tmp_path: Path) -> None:
    bad = subprocess.run(["bash", "benchmarks/gpu.sh", "fast"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1"})
    assert bad.returncode == 2 and "expected mode eager or compile, got fast" in bad.stderr
    bare = tmp_path / "python3"  # a python that has torch but not diffusers, as on the device
    bare.write_text("#!/bin/sh\nexec /usr/bin/env python3 -I -c 'import sys; sys.exit(1)' \"$@\"\n")
    bare.chmod(0o755)
    missing = subprocess.run(["bash", "benchmarks/gpu.sh", "eager"], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "PYTHON": str(bare), "WHEELS": str(tmp_path / "none")})
    assert missing.returncode == 2 and "no wheels in" in missing.stderr and "fetch_gpu_wheels.sh" in missing.stderr

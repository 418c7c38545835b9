"""The demo's closing check says whether its detection is what it should be, and why not."""

from __future__ import annotations

import subprocess
import sys

from mdps_ray.cli.commands import DEMO_STEPS, build_parser
from mdps_ray.cli.demo import EXPECTED_AUROC, demo_verdict


def test_the_verdict_names_the_reason_for_a_weak_result() -> None:
    assert "as expected" in demo_verdict({"image_auroc": EXPECTED_AUROC + 0.01}, DEMO_STEPS, DEMO_STEPS, True)
    assert "cut at 30 of 600 steps" in demo_verdict({"image_auroc": 0.4}, 30, 600, True)
    assert "fewer than the demo's" in demo_verdict({"image_auroc": 0.4}, 40, 40, True)
    assert "not the generated set" in demo_verdict({"image_auroc": 0.4}, DEMO_STEPS, DEMO_STEPS, False)
    assert "no AUROC" in demo_verdict({"n_images": 3}, DEMO_STEPS, DEMO_STEPS, True)


def test_the_demo_trains_for_steps_not_for_wall_time() -> None:
    args = build_parser().parse_args(["demo"])
    assert args.train_seconds is None and args.max_steps == DEMO_STEPS


def test_a_usage_error_is_answered_without_importing_torch() -> None:
    code = ("import sys\nfrom mdps_ray.cli import main\ntry:\n    main(['score', '--bogus'])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr

"""The GPU batch policy and the out-of-memory back-off (issue 18, finding 8)."""

from __future__ import annotations

import pytest
import torch

from mdps_ray.config.method import MapConfig, MaskConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.config.presets import DEFAULT, PAPER_PRIOR
from mdps_ray.method.batching import CPU_BATCH, GPU_MIN_ROWS, ChunkedScorer, default_batch, row_bytes, splittable
from mdps_ray.method.scorer import ScoreResult
from tests.helpers.models import make_scorer, tiny_sampler

IDS = [f"cat/test/good/{i:03d}" for i in range(4)]
GIB = 2**30


def test_a_gpu_call_holds_enough_rows_to_keep_the_device_busy() -> None:
    assert default_batch(DEFAULT, "cpu") == CPU_BATCH
    for n in (1, 2, 4):
        cfg = apply_overrides(DEFAULT, [f"sampler.stage1.n_samples={n}", f"sampler.stage2.n_samples={n}"])
        assert default_batch(cfg, "cuda") * n >= GPU_MIN_ROWS
        assert default_batch(cfg, "cuda", free_bytes=140 * GIB) * n >= GPU_MIN_ROWS  # 64 px fits easily


def test_at_paper_size_the_batch_follows_the_free_memory() -> None:
    paper = DEFAULT.model_copy(update={"prior": PAPER_PRIOR})
    assert row_bytes(paper) == pytest.approx(1.15 * GIB)
    n = paper.sampler.stage2.n_samples
    roomy, tight = default_batch(paper, "cuda", 140 * GIB), default_batch(paper, "cuda", 8 * GIB)
    assert tight < roomy and roomy * n * row_bytes(paper) <= 0.6 * 140 * GIB
    assert default_batch(paper, "cuda", 0.5 * GIB) == 1  # never below one image: the back-off takes over


def test_chunks_after_out_of_memory_give_the_one_call_result(tiny_unet: torch.nn.Module,
                                                             images16: torch.Tensor) -> None:
    sampler = tiny_sampler(mask=MaskConfig(mode="calibrated", threshold=0.05))
    scorer = make_scorer(tiny_unet, sampler, MapConfig(backbone="random", blur_sigma=1.0, stage1_weight=0.1))
    calls: list[int] = []
    freed: list[int] = []

    def small_device(y: torch.Tensor, ids: list[str]) -> ScoreResult:
        calls.append(len(ids))
        if len(ids) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return scorer.score(y, ids)

    chunked = ChunkedScorer(small_device, limit=4, empty_cache=lambda: freed.append(1))
    got, whole = chunked(images16, IDS), scorer.score(images16, IDS)
    assert calls[:3] == [4, 2, 1] and chunked.limit == 1 and len(freed) == 2
    assert got.image_ids == IDS
    for name in ("score", "anomaly_map", "reconstruction", "stage1_map", "mask"):
        assert torch.allclose(getattr(got, name), getattr(whole, name), atol=1e-5), name
    calls.clear()
    chunked(images16, IDS)  # the limit found is kept: no failed attempt on the next batch
    assert calls == [1, 1, 1, 1]


def test_batch_coupled_rules_are_never_split_and_one_image_that_does_not_fit_is_raised() -> None:
    assert splittable(DEFAULT)
    assert not splittable(apply_overrides(DEFAULT, ["sampler.guidance_norm=batch"]))
    assert not splittable(apply_overrides(DEFAULT, ["maps.weighting=batch"]))

    def never_fits(y: torch.Tensor, ids: list[str]) -> ScoreResult:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    y = torch.zeros((2, 3, 8, 8))
    with pytest.raises(torch.OutOfMemoryError):
        ChunkedScorer(never_fits, limit=2)(y, ["a", "b"])
    with pytest.raises(torch.OutOfMemoryError):
        ChunkedScorer(never_fits, limit=2, split=False)(y, ["a", "b"])

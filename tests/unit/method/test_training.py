"""The training step and its resumable state (safetensors + JSON, no pickle)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdps_ray.config.method import TrainConfig
from mdps_ray.method.training import PriorTrainer, diffusion_loss, random_crops
from mdps_ray.models.prior import build_unet
from mdps_ray.storage.train_state import load_state, save_state
from tests.helpers.models import TINY_PRIOR


def _trainer(seed: int = 0, **train: object) -> PriorTrainer:
    torch.manual_seed(seed)
    cfg = TrainConfig(batch_size=4, **train)  # type: ignore[arg-type]
    return PriorTrainer(build_unet(TINY_PRIOR), TINY_PRIOR, cfg, torch.Generator().manual_seed(seed))


def _batch() -> torch.Tensor:
    return torch.rand((4, 3, 16, 16), generator=torch.Generator().manual_seed(5)) * 2 - 1


def test_summed_loss_is_pixels_times_mean_loss() -> None:
    unet = build_unet(TINY_PRIOR)
    x0, noise = _batch(), torch.randn((4, 3, 16, 16))
    t, ab = torch.tensor([1, 50, 100, 200]), torch.tensor([0.9, 0.7, 0.5, 0.3])
    with torch.no_grad():
        mean = diffusion_loss(unet, x0, t, noise, ab, "mean")
        summed = diffusion_loss(unet, x0, t, noise, ab, "sum")
    assert torch.allclose(summed, mean * 3 * 16 * 16, rtol=1e-5)


def test_keyed_draws_do_not_depend_on_batch_mates() -> None:
    tr = _trainer()
    x0 = _batch()
    t_all, n_all = tr.draw(x0, [10, 11, 12, 13])
    t_one, n_one = tr.draw(x0[2:3], [12])
    assert t_all[2] == t_one[0] and torch.equal(n_all[2], n_one[0])
    assert (t_all >= 0).all() and (t_all < 300).all()


def test_state_round_trip_continues_identically(tmp_path: Path) -> None:
    a = _trainer()
    for _ in range(3):
        a.step(_batch(), [0, 1, 2, 3])
    a.starts.append(0)
    save_state(a, tmp_path, elapsed=12.5)
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    b = _trainer(seed=1)  # different init: everything must come from the state
    assert load_state(b, tmp_path) == 12.5
    assert b.step_count == 3 and b.losses == a.losses and b.grad_norms == a.grad_norms and b.starts == [0]
    la, lb = a.step(_batch(), [0, 1, 2, 3]), b.step(_batch(), [0, 1, 2, 3])
    assert abs(la - lb) < 1e-6
    for pa, pb in zip(a.final_unet().parameters(), b.final_unet().parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_ema_weights_are_what_gets_saved() -> None:
    tr = _trainer(ema_decay=0.5)
    for _ in range(3):
        tr.step(_batch())
    raw = next(tr.module.parameters()).detach().clone()
    saved = next(tr.final_unet().parameters())
    assert not torch.allclose(raw, saved)


def test_a_tile_prior_trains_on_random_windows_of_the_larger_images() -> None:
    x = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).view(2, 3, 8, 10)
    a = random_crops(x, 4, torch.Generator().manual_seed(0))
    b = random_crops(x, 4, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 4, 4) and torch.equal(a, b)  # drawn from the generator only
    for i in range(2):  # each crop is a window of its own image
        top, left = divmod(int(a[i, 0, 0, 0] - x[i, 0, 0, 0]), 10)
        assert torch.equal(a[i], x[i, :, top : top + 4, left : left + 4])
    square = x[..., :4, :4]
    assert random_crops(square, 4, torch.Generator()) is square  # images of the prior's side: as they are
    with pytest.raises(ValueError, match="at least 9 px for 9 px crops, got 8x10"):
        random_crops(x, 9, torch.Generator())

"""Schedule and the DDIM step, against diffusers' DDIMScheduler and exact inverses."""

from __future__ import annotations

import pytest
import torch

from mdps_ray.config.method import PriorConfig
from mdps_ray.core import schedule
from mdps_ray.core.noise import RowNoise
from mdps_ray.core.posterior import ddim_sigma, ddim_step, eps_from_x0, predict_x0, q_sample
from mdps_ray.core.sampler import ReverseProcess, sample_posterior
from mdps_ray.models.prior import alpha_bars, build_scheduler
from mdps_ray.models.runtime import unet_denoiser
from tests.helpers.models import TINY_PRIOR


def test_alpha_bars_match_diffusers_and_paper_values() -> None:
    ours = alpha_bars(PriorConfig())
    theirs = build_scheduler(PriorConfig()).alphas_cumprod.double()
    assert torch.allclose(ours, theirs, atol=1e-6)
    # docs/method.md §1.5: ᾱ_200 = 0.6564 (noise std 0.586), ᾱ_180 = 0.7096
    assert ours[200].item() == pytest.approx(0.6564, abs=1e-4)
    assert ours[180].item() == pytest.approx(0.7096, abs=1e-4)


@pytest.mark.parametrize(("start", "n_steps"), [(150, 8), (200, 10), (250, 13)])
def test_code_alignment_step_counts(start: int, n_steps: int) -> None:
    steps = schedule.reverse_timesteps(start, 20, "code")
    assert len(steps) == n_steps and steps[0] == (start - 1) // 20 * 20 and steps[-1] == 0


def test_aligned_timesteps_start_at_noise_level_and_skip_zero() -> None:
    assert schedule.reverse_timesteps(200, 20, "aligned") == list(range(200, 0, -20))


def test_forward_and_tweedie_are_inverse() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn((2, 3, 4, 4), generator=g), torch.randn((2, 3, 4, 4), generator=g)
    x_t = q_sample(x0, 0.3, eps)
    assert torch.allclose(predict_x0(x_t, eps, 0.3), x0, atol=1e-5)
    assert torch.allclose(eps_from_x0(x_t, x0, 0.3), eps, atol=1e-5)


def test_ddim_step_by_hand() -> None:
    # ᾱ_t = 0.36, ᾱ_s = 0.64, η = 1: σ² = (0.36/0.64)(1 − 0.36/0.64) = 0.24609375
    sigma = ddim_sigma(0.36, 0.64, 1.0)
    assert sigma**2 == pytest.approx((1 - 0.64) / (1 - 0.36) * (1 - 0.36 / 0.64))
    x0, eps, z = torch.full((1,), 0.5), torch.full((1,), -1.0), torch.full((1,), 2.0)
    expected = 0.8 * 0.5 + (1 - 0.64 - sigma**2) ** 0.5 * -1.0 + sigma * 2.0
    assert ddim_step(eps, x0, 0.64, sigma, z).item() == pytest.approx(expected, abs=1e-6)
    assert ddim_step(eps, x0, 1.0, 0.0, None).item() == pytest.approx(0.5)  # last step → x̂0


def test_stochastic_step_without_noise_is_refused() -> None:
    with pytest.raises(ValueError, match="expected noise z"):
        ddim_step(torch.zeros(1), torch.zeros(1), 0.5, 0.1, None)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_one_sampler_step_equals_diffusers_ddim(tiny_unet: torch.nn.Module, images16: torch.Tensor, eta: float) -> None:
    """ρ = 0, no mask: our first reverse step equals DDIMScheduler.step with the same noise."""
    denoiser = unet_denoiser(tiny_unet)
    ab = alpha_bars(TINY_PRIOR)
    process = ReverseProcess(ab, noise_level=200, timesteps=(200, 180, 160), eta=eta, rho=0.0)
    seeds = [11, 12, 13, 14]
    trajectory: list[torch.Tensor] = []
    sample_posterior(denoiser, images16, process, RowNoise(seeds, torch.device("cpu")), trajectory=trajectory)

    replay = RowNoise(seeds, torch.device("cpu"))
    z0 = replay.randn(images16.shape[1:])
    z1 = replay.randn(images16.shape[1:])
    x_200 = q_sample(images16, ab[200].item(), z0)
    scheduler = build_scheduler(TINY_PRIOR)
    scheduler.set_timesteps(50)  # stride 1000/50 = 20: 200 → 180
    with torch.no_grad():
        eps = denoiser(x_200, torch.full((4,), 200))
    expected = scheduler.step(eps, 200, x_200, eta=eta, variance_noise=z1).prev_sample
    assert torch.allclose(trajectory[0], expected, atol=1e-5)

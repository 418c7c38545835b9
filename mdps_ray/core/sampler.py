"""The MDPS reverse loop: masked diffusion posterior sampling with DDIM.

One call turns observations y into posterior samples x0 ~ p(x0 | y):

    x_{T′} = √ᾱ_{T′} y + √(1 − ᾱ_{T′}) z₀                         (forward-noise the observation)
    for τ_k in the reverse sub-sequence:
        ε̂  = ε_θ(x_t, t) + √(1 − ᾱ_t) ρ ∇‖y − x̂0‖                 (guidance, see guidance.py)
        masked observation model, m = 1 on suspected-anomalous pixels:
          "eps_mix"  (paper Fig. 1): ε_φ = m ⊙ ε̂ + (1 − m) ⊙ (x_t − √ᾱ_t y)/√(1 − ᾱ_t)
          "replace"  (official code): before ε_θ, x_t ← m ⊙ x_t + (1 − m) ⊙ (√ᾱ_t y + √(1 − ᾱ_t) z₀)
        x̂0 = (x_t − √(1 − ᾱ_t) ε_φ)/√ᾱ_t ;  x_s = √ᾱ_s x̂0 + √(1 − ᾱ_s − σ²) ε_φ + σ z
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from mdps_ray.core.guidance import Denoiser, GuidanceNorm, guided_eps
from mdps_ray.core.noise import RowNoise
from mdps_ray.core.posterior import ddim_sigma, ddim_step, eps_from_x0, predict_x0, q_sample
from mdps_ray.core.schedule import alpha_bar_at

MaskedSampler = Literal["eps_mix", "replace"]


@dataclass(frozen=True)
class ReverseProcess:
    """What the loop needs to know about the schedule and the step rule.

    Attributes:
        alpha_bars: ᾱ_t for t = 0..T−1, (T,) float64.
        noise_level: T′, the level y is forward-noised to.
        timesteps: descending τ_0 > τ_1 > … visited by the loop (see schedule.reverse_timesteps).
        eta: DDIM η (1 = the official code).
        rho: guidance scale ρ (0 = no guidance).
        guidance_norm: ``"per_image"`` or ``"batch"``.
        n_samples: samples per image n of the (image-major) rows, for the batch norm's repeats.
    """

    alpha_bars: torch.Tensor
    noise_level: int
    timesteps: tuple[int, ...]
    eta: float = 1.0
    rho: float = 0.0
    guidance_norm: GuidanceNorm = "per_image"
    n_samples: int = 1

    def __post_init__(self) -> None:
        steps = list(self.timesteps)
        if not steps or steps != sorted(steps, reverse=True) or len(set(steps)) != len(steps):
            raise ValueError(f"expected strictly descending timesteps, got {steps}")
        top = len(self.alpha_bars) - 1
        if steps[-1] < 0 or max(steps[0], self.noise_level) > top:
            raise ValueError(f"expected timesteps and T' within [0, {top}], got T'={self.noise_level}, {steps}")


def sample_posterior(
    denoiser: Denoiser,
    y: torch.Tensor,
    process: ReverseProcess,
    noise: RowNoise,
    mask: torch.Tensor | None = None,
    masked_sampler: MaskedSampler = "eps_mix",
    trajectory: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Draw one posterior sample x0 per row of ``y``.

    Args:
        denoiser: ε_θ(x_t, t).
        y: observations in [−1, 1], (B, C, H, W); rows are (image, sample) pairs.
        process: schedule, timesteps, η, ρ.
        noise: per-row noise source with B rows.
        mask: m, (B, 1, H, W) in {0, 1}, 1 = suspected anomalous; None = unmasked sampling.
        masked_sampler: ``"eps_mix"`` (paper) or ``"replace"`` (official code); used with a mask.
        trajectory: if given, every intermediate x_s is appended to it (on the same device).

    Returns:
        x0 samples, (B, C, H, W).
    """
    _check_inputs(y, noise, mask)
    # 0. x_{T′} = √ᾱ_{T′} y + √(1 − ᾱ_{T′}) z₀. z₀ is kept: "replace" re-noises y with the same draw.
    z0 = noise.randn(y.shape[1:], dtype=y.dtype)
    x = q_sample(y, alpha_bar_at(process.alpha_bars, process.noise_level), z0)
    steps = process.timesteps
    for k, t in enumerate(steps):
        # 1. the next visited timestep s; s = −1 after the last one, where ᾱ_{−1} = 1 (x_s is x̂0)
        s = steps[k + 1] if k + 1 < len(steps) else -1
        a_t, a_s = alpha_bar_at(process.alpha_bars, t), alpha_bar_at(process.alpha_bars, s)
        # 2. official code only: unmasked pixels of x_t are replaced by the re-noised observation
        if mask is not None and masked_sampler == "replace":
            x = mask * x + (1.0 - mask) * q_sample(y, a_t, z0)
        # 3. ε̂ = ε_θ(x_t, t) + √(1 − ᾱ_t) ρ ∇‖y − x̂0‖, one forward with autograd (guidance.py)
        t_batch = torch.full((y.shape[0],), t, device=y.device, dtype=torch.long)
        eps = guided_eps(denoiser, x, t_batch, a_t, y, process.rho, process.guidance_norm, process.n_samples)
        # 4. paper Fig. 1: on unmasked pixels use the ε that makes x̂0 = y exactly
        if mask is not None and masked_sampler == "eps_mix":
            eps = mask * eps + (1.0 - mask) * eps_from_x0(x, y, a_t)
        # 5. DDIM step with η: σ = 0 on the last step, so no noise is drawn there (the draw order is
        #    part of the per-image noise stream, so changing it changes every later sample)
        sigma = ddim_sigma(a_t, a_s, process.eta) if s >= 0 else 0.0
        z = noise.randn(y.shape[1:], dtype=y.dtype) if sigma > 0.0 else None
        x = ddim_step(eps, predict_x0(x, eps, a_t), a_s, sigma, z)
        if trajectory is not None:
            trajectory.append(x)
    return x


def _check_inputs(y: torch.Tensor, noise: RowNoise, mask: torch.Tensor | None) -> None:
    if y.ndim != 4:
        raise ValueError(f"expected y of shape (B, C, H, W), got {tuple(y.shape)}")
    if len(noise) != y.shape[0]:
        raise ValueError(f"expected {y.shape[0]} noise rows (one per row of y), got {len(noise)}")
    if mask is not None:
        expected = (y.shape[0], 1, *y.shape[2:])
        if tuple(mask.shape) != expected:
            raise ValueError(f"expected mask of shape {expected}, got {tuple(mask.shape)}")

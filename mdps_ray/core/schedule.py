"""Diffusion noise schedule and the strided reverse sub-sequence.

Notation (DDPM/DDIM, 0-based index t into the cumulative product, as the MDPS code):
    β_t           linear from ``beta_start`` to ``beta_end`` over T steps
    ᾱ_t = ∏_{k≤t} (1 − β_k)
    ᾱ_{−1} := 1   (the "clean" end of the last reverse step)
"""

from __future__ import annotations

from typing import Literal

import torch

Alignment = Literal["code", "aligned"]


def linear_betas(num_train_timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """β_t, shape (T,), float64, linear in t (the schedule of DDPM and of the MDPS prior)."""
    if num_train_timesteps < 2:
        raise ValueError(f"expected num_train_timesteps >= 2, got {num_train_timesteps}")
    if not 0.0 < beta_start < beta_end < 1.0:
        raise ValueError(f"expected 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = ∏_{k≤t} (1 − β_k); shape (T,), same dtype as ``betas``."""
    return torch.cumprod(1.0 - betas, dim=0)


def alpha_bar_at(alpha_bars: torch.Tensor, t: int) -> float:
    """ᾱ_t as a Python float, with the convention ᾱ_{−1} = 1."""
    if t < 0:
        return 1.0
    return float(alpha_bars[t])


def reverse_timesteps(start_step: int, stride: int, alignment: Alignment) -> list[int]:
    """The descending timesteps τ_0 > τ_1 > … visited by the reverse loop from level T′.

    The observation is forward-noised to level T′ = ``start_step``. Then:

    - ``"code"``: τ = (T′ − s, T′ − 2s, …, 0) for stride s — the official code's walk of
      ``range(0, T′, s)`` reversed. The first network call is told t = T′ − s although the image
      carries the noise of T′ (docs/method.md §1.5), and the last call runs at t = 0.
    - ``"aligned"``: τ = (T′, T′ − s, …) down to the smallest value > 0 — the first call is told
      the true noise level and t = 0 (never seen in training) is not evaluated.

    Each step maps x_{τ_k} to x_{τ_{k+1}}; the last one maps to x_{−1} = x̂0.
    """
    if stride < 1:
        raise ValueError(f"expected stride >= 1, got {stride}")
    if start_step < 1:
        raise ValueError(f"expected start_step >= 1, got {start_step}")
    if alignment == "code":
        return list(range(0, start_step, stride))[::-1]
    if alignment == "aligned":
        return list(range(start_step, 0, -stride))
    raise ValueError(f"expected alignment 'code' or 'aligned', got {alignment!r}")

"""Forward noising, Tweedie's x̂0, and the DDIM posterior step.

Notation (Song et al., DDIM, eq. 12; ᾱ is the cumulative product, called α in the DDIM paper):
    x_t    noisy sample at step t                      (B, C, H, W)
    ε      noise prediction ε_θ(x_t, t)                (B, C, H, W)
    x̂0     predicted clean image                       (B, C, H, W)
    ᾱ_t    cumulative product at t                     float or (B,) tensor
    ᾱ_s    cumulative product at the next (smaller) step s, ᾱ_{−1} = 1
    η      stochasticity: 0 = deterministic DDIM, 1 = DDPM-like (the MDPS code)
"""

from __future__ import annotations

import math

import torch


def _coef(value: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """A scalar coefficient stays a Python float (no host→device copy, no stream sync per step);
    a per-row (B,) tensor is broadcast against a (B, …) tensor."""
    if not isinstance(value, torch.Tensor):
        return float(value)
    coef = value.to(dtype=like.dtype, device=like.device)
    if coef.ndim == 1:
        coef = coef.view(-1, *([1] * (like.ndim - 1)))
    return coef


def _roots(value: float | torch.Tensor, like: torch.Tensor) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """(√ᾱ, √(1 − ᾱ)) as floats for a scalar ᾱ, as broadcast tensors for a per-row ᾱ."""
    a = _coef(value, like)
    if isinstance(a, float):
        return math.sqrt(a), math.sqrt(1.0 - a)
    return a.sqrt(), (1.0 - a).sqrt()


def q_sample(x0: torch.Tensor, alpha_bar_t: float | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε   (forward process q(x_t | x0))."""
    root_a, root_1ma = _roots(alpha_bar_t, x0)
    return root_a * x0 + root_1ma * noise


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """Tweedie's estimate x̂0 = (x_t − √(1 − ᾱ_t) · ε) / √ᾱ_t."""
    root_a, root_1ma = _roots(alpha_bar_t, x_t)
    return (x_t - root_1ma * eps) / root_a


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar_t: float | torch.Tensor) -> torch.Tensor:
    """The noise that maps x_t back to x0: ε = (x_t − √ᾱ_t · x0) / √(1 − ᾱ_t).

    With x0 = y this is the paper's unmasked branch ε^{m̄}_φ (MDPS Fig. 1).
    """
    root_a, root_1ma = _roots(alpha_bar_t, x_t)
    return (x_t - root_a * x0) / root_1ma


def ddim_sigma(alpha_bar_t: float, alpha_bar_s: float, eta: float) -> float:
    """σ = η · √[(1 − ᾱ_s)/(1 − ᾱ_t)] · √(1 − ᾱ_t/ᾱ_s)   (DDIM eq. 16).

    With η = 1 this is the official code's c1 (docs/method.md §1.4 step 5).
    """
    variance = (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_s)
    return eta * math.sqrt(max(variance, 0.0))


def ddim_step(
    eps: torch.Tensor,
    x0_hat: torch.Tensor,
    alpha_bar_s: float,
    sigma: float,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """One reverse DDIM step x_t → x_s (DDIM eq. 12).

        x_s = √ᾱ_s · x̂0 + √(1 − ᾱ_s − σ²) · ε + σ · z

    ``noise`` (z, shape of ``eps``) is required when σ > 0 and ignored when σ = 0.
    On the last step (ᾱ_s = 1, σ = 0) the result is x̂0.
    """
    if sigma > 0.0 and noise is None:
        raise ValueError("expected noise z for a stochastic step (sigma > 0), got None")
    direction = math.sqrt(max(1.0 - alpha_bar_s - sigma**2, 0.0))
    x_s = math.sqrt(alpha_bar_s) * x0_hat + direction * eps
    if sigma > 0.0 and noise is not None:
        x_s = x_s + sigma * noise
    return x_s

"""The DPS likelihood guidance of MDPS (Chung et al. 2023; MDPS Fig. 1, code §1.4).

    x̂0(x_t) = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t)) / √ᾱ_t
    g        = ∇_{x_t} ‖y − x̂0(x_t)‖₂               (unsquared, as the official code)
    ε̂        = ε_θ(x_t, t) + √(1 − ᾱ_t) · ρ · g

The norm is taken per image (``norm="per_image"``), so an image's gradient is independent of
its batch-mates. ``norm="batch"`` reproduces the official code, which draws its n samples as n
passes over a batch of B images and takes one Frobenius norm per pass: rows are (image, sample)
pairs in image-major order (row i·n + j is sample j of image i), so the norm is taken over the B
rows of each repeat j and summed over repeats — not over all B·n rows, which would make the
guidance √n weaker. It couples images and exists only to reproduce published numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from mdps_ray.core.posterior import predict_x0

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""ε_θ(x_t, t): (B, C, H, W) and integer timesteps (B,) → noise prediction (B, C, H, W)."""

GuidanceNorm = Literal["per_image", "batch"]


def residual_norm(residual: torch.Tensor, norm: GuidanceNorm, n_samples: int = 1) -> torch.Tensor:
    """Σ_rows ‖r_row‖₂ (per_image), or Σ_j ‖r_{·, j}‖_F over the n repeats of B images (batch); a scalar.

    ``residual`` is (B·n, C, H, W) with row i·n + j = sample j of image i.
    """
    if norm == "per_image":
        return residual.flatten(1).norm(dim=1).sum()
    if norm == "batch":
        if residual.shape[0] % n_samples:
            raise ValueError(f"expected rows in whole repeats of {n_samples}, got {residual.shape[0]} rows")
        return residual.reshape(-1, n_samples, residual[0].numel()).norm(dim=(0, 2)).sum()
    raise ValueError(f"expected norm 'per_image' or 'batch', got {norm!r}")


def guided_eps(
    denoiser: Denoiser,
    x_t: torch.Tensor,
    t: torch.Tensor,
    alpha_bar_t: float,
    y: torch.Tensor,
    rho: float,
    norm: GuidanceNorm = "per_image",
    n_samples: int = 1,
) -> torch.Tensor:
    """ε̂ = ε_θ(x_t, t) + √(1 − ᾱ_t) · ρ · ∇_{x_t} ‖y − x̂0‖, with one forward pass.

    Args:
        denoiser: ε_θ.
        x_t: current samples, (B, C, H, W).
        t: timesteps, (B,) integer.
        alpha_bar_t: ᾱ_t.
        y: the observation each row is guided towards, (B, C, H, W).
        rho: guidance scale ρ (the code's ``w``); ρ = 0 skips autograd entirely.
        norm: ``"per_image"`` (default) or ``"batch"`` (official code).
        n_samples: samples per image n (rows are image-major), for ``norm="batch"``.

    Returns:
        ε̂, (B, C, H, W), detached.
    """
    if rho == 0.0:
        with torch.no_grad():
            return denoiser(x_t, t)
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        eps = denoiser(x, t)
        residual = predict_x0(x, eps, alpha_bar_t) - y
        # backward(inputs=…) rather than autograd.grad: same gradient, and FLOP counters can trace it
        torch.autograd.backward(residual_norm(residual, norm, n_samples), inputs=[x])
    if x.grad is None:
        raise RuntimeError("the denoiser does not depend on x_t: no guidance gradient")
    return eps.detach() + (1.0 - alpha_bar_t) ** 0.5 * rho * x.grad

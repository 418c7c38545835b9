"""Reconstruction quality of posterior samples on normal images: PSNR, SSIM, LPIPS."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mdps_ray.core.maps import gaussian_kernel1d


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [−1, 1] (compared on [0, 1]); (B, C, H, W) ×2 → (B,)."""
    mse = (_unit(x) - _unit(y)).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.5, size: int = 11) -> torch.Tensor:
    """SSIM (Wang et al. 2004; Gaussian window 11, σ 1.5, K1 0.01, K2 0.03) on [0, 1]; → (B,)."""
    a, b = _unit(x), _unit(y)
    c = a.shape[1]
    k1 = gaussian_kernel1d(sigma, size, a.dtype, a.device)
    win = (k1[:, None] * k1[None, :]).expand(c, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)

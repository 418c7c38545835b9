"""A scorer with the official MDPS code's structure, for speed comparisons (docs/method.md §1.4, §8).

Structure kept from the official code: posterior samples in a Python loop over repeats; a no-grad
forward *and* an autograd forward per guided step; ᾱ rebuilt with numpy at every step; every x_t
copied to the CPU, stored and copied back; the backbone features of y recomputed at every distance
call; the guidance norm and the pixel/feature max ratio taken over the whole batch.
What is *not* the official code: noise comes from the same per-row generators as mdps-ray, so both
can be compared output for output (with one image per batch, batch-wide equals per-image).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.functional import gaussian_blur

from mdps_ray.core.maps import pixel_distance
from mdps_ray.core.noise import RowNoise, derive_seed
from mdps_ray.core.scores import image_score


def compute_alpha(beta_start: float, beta_end: float, steps: int, t: int) -> float:
    """ᾱ_t rebuilt from scratch on every call, as the official code does (ᾱ_{−1} = 1)."""
    betas = np.linspace(beta_start, beta_end, steps, dtype=np.float64)
    a = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
    return float(a[t + 1])


def reference_sample(unet, y, start, stride, w, noise: RowNoise, mask=None, sched=(1e-4, 0.02, 1000)):
    """One repeat of the official sampler (η = 1); ``mask`` switches to the RePaint-style form."""
    seq = list(range(0, start, stride))
    seq_next = [-1, *seq[:-1]]
    z0 = noise.randn(y.shape[1:])
    a_start = compute_alpha(*sched, start)
    xs = [(a_start**0.5 * y + (1 - a_start) ** 0.5 * z0).cpu()]
    for i, j in zip(reversed(seq), reversed(seq_next), strict=True):
        at, at_next = compute_alpha(*sched, i), compute_alpha(*sched, j)
        xt = xs[-1].to(y.device)
        if mask is not None:
            xt = mask * xt + (1 - mask) * (at**0.5 * y + (1 - at) ** 0.5 * z0)
        t = torch.full((y.shape[0],), i, device=y.device, dtype=torch.long)
        with torch.no_grad():
            et = unet(xt, t).sample
        if w:
            with torch.enable_grad():
                x_in = xt.detach().requires_grad_(True)
                x0 = (x_in - unet(x_in, t).sample * (1 - at) ** 0.5) / at**0.5
                norm = torch.linalg.norm(x0 - y)  # the whole batch tensor
                grad = torch.autograd.grad(norm, x_in)[0]
            et = et + (1 - at) ** 0.5 * w * grad
        x0_t = (xt - et * (1 - at) ** 0.5) / at**0.5
        c1 = ((1 - at / at_next) * (1 - at_next) / (1 - at)) ** 0.5 if j >= 0 else 0.0
        c2 = max(1 - at_next - c1**2, 0.0) ** 0.5
        z = noise.randn(y.shape[1:]) if c1 > 0 else torch.zeros_like(y)
        xs.append((at_next**0.5 * x0_t + c1 * z + c2 * et).cpu())
    return xs[-1].to(y.device)


def reference_distance(backbone, x0, y, pixel_weight, sigma):
    """Official ``distance``: y's features recomputed, batch-wide max ratio, blur, /2."""
    i_d = pixel_distance(x0, y)
    with torch.no_grad():
        f_d = backbone.distance(backbone.features(x0), backbone.features(y), tuple(y.shape[-2:]))
    a = f_d + pixel_weight * (f_d.max() / i_d.max()) * i_d
    size = 2 * int(np.ceil(4 * sigma)) + 1
    return gaussian_blur(a, [size, size], [sigma, sigma]) / 2


def reference_score(unet, backbone, y, ids, cfg, mask_threshold):
    """Two stages as ``multi_MDPS.py``, with a given stage-1 threshold; returns (scores, maps)."""
    s, m = cfg.sampler, cfg.maps
    sched = (cfg.prior.beta_start, cfg.prior.beta_end, cfg.prior.num_train_timesteps)

    def stage(st, name, mask):
        maps = []
        for r in range(st.n_samples):
            noise = RowNoise([derive_seed(s.seed, i, r, name) for i in ids], y.device)
            x0 = reference_sample(unet, y, st.start_step, st.stride, st.rho, noise, mask, sched)
            maps.append(reference_distance(backbone, x0, y, m.pixel_weight, m.blur_sigma))
        return torch.stack(maps).mean(0)

    mask = None
    if s.mask.mode != "none":
        mask = (stage(s.stage1, "stage1", None) > mask_threshold).float()
    amap = stage(s.stage2, "stage2", mask) * (m.scale / 0.5)
    return image_score(amap, cfg.score.method, cfg.score.k, cfg.score.fraction), amap

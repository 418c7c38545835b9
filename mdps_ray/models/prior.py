"""The DDIM prior: a diffusers ``UNet2DModel`` (ε-prediction) and its linear-β schedule."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler, UNet2DModel

from mdps_ray.config.method import PriorConfig
from mdps_ray.core import schedule


def build_unet(cfg: PriorConfig) -> UNet2DModel:
    """A randomly initialised UNet from the prior config (on the CPU, fp32).

    ``resnet_updown`` gives guided-diffusion's BigGAN-style res-block up/down sampling; with the
    paper preset this is ≈ 32.95 M parameters at 256 px, like the official UNet.
    """
    down_plain = "ResnetDownsampleBlock2D" if cfg.resnet_updown else "DownBlock2D"
    up_plain = "ResnetUpsampleBlock2D" if cfg.resnet_updown else "UpBlock2D"
    down = tuple("AttnDownBlock2D" if a else down_plain for a in cfg.attention_levels)
    up = tuple("AttnUpBlock2D" if a else up_plain for a in reversed(cfg.attention_levels))
    return UNet2DModel(
        sample_size=cfg.image_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        downsample_type="resnet" if cfg.resnet_updown else "conv",
        upsample_type="resnet" if cfg.resnet_updown else "conv",
    )


def build_scheduler(cfg: PriorConfig) -> DDIMScheduler:
    """The diffusers scheduler matching the prior (saved beside it; used for parity tests)."""
    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type="epsilon",
    )


def alpha_bars(cfg: PriorConfig) -> torch.Tensor:
    """ᾱ_t, (T,) float64, built once from the prior config."""
    betas = schedule.linear_betas(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end)
    return schedule.alphas_cumprod(betas)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over the parameter and buffer names, dtypes, shapes and bytes (16 hex digits)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def prior_digest(nets: Sequence[torch.nn.Module]) -> str:
    """:func:`weights_digest` of one prior; of T per-position priors, sha256 over their digests in order."""
    if len(nets) == 1:
        return weights_digest(nets[0])
    return hashlib.sha256("|".join(weights_digest(n) for n in nets).encode()).hexdigest()[:16]


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())

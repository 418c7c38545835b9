"""The DDIM prior: a diffusers ``UNet2DModel`` (ε-prediction) and its linear-β schedule."""

from __future__ import annotations

import copy
import hashlib

import torch
from diffusers import DDIMScheduler, UNet2DModel

from mdps_ray.config import PriorConfig
from mdps_ray.core import schedule
from mdps_ray.core.guidance import Denoiser


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


PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_dtype(precision: str) -> torch.dtype:
    """The UNet's dtype for a ``runtime.precision`` value."""
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"expected precision fp32, bf16 or fp16, got {precision!r}")
    return PRECISION_DTYPES[precision]


def unet_denoiser(unet: torch.nn.Module, precision: str = "fp32", channels_last: bool = False) -> Denoiser:
    """ε_θ(x_t, t) as a plain callable over the UNet.

    With ``precision`` bf16/fp16 the UNet's weights must already be in that dtype (see
    :func:`prepare_unet`): x_t is cast to it on the way in (autograd follows the cast, so the
    guidance gradient still reaches the fp32 x_t) and ε comes back as fp32, so the sampler's
    update rules, norms and maps stay fp32. With ``channels_last`` the input is passed in NHWC
    memory format (the UNet itself must have been converted too).
    """
    dtype = precision_dtype(precision)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = x_t.to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return unet(x, t).sample.float()

    return denoise


def prepare_unet(
    unet: torch.nn.Module, device: torch.device, channels_last: bool, compile: bool, precision: str = "fp32"
) -> torch.nn.Module:
    """Move to ``device`` in the ``precision`` dtype, freeze, optionally convert to NHWC and compile.

    Low precision casts the weights themselves (pure bf16/fp16 inference, as diffusers'
    ``torch_dtype``) rather than autocasting: on CPU autocast re-casts every weight at every call
    and measured slower than fp32 (benchmarks/sampler.py). The cast works on a copy, so the
    caller's fp32 module can still serve other scorers; device moves and NHWC are in place.
    """
    unet = unet.to(device).eval().requires_grad_(False)
    if precision != "fp32":
        # nn.Module.to: diffusers' own .to(dtype=…) warns about keep-in-fp32 modules even when there are none
        unet = torch.nn.Module.to(copy.deepcopy(unet), dtype=precision_dtype(precision))
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile:
        unet = torch.compile(unet)  # type: ignore[assignment]
    return unet


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over the parameter and buffer names, dtypes, shapes and bytes (16 hex digits)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())

"""How the prior runs: precision, memory format, compilation, the ε_θ callable."""

from __future__ import annotations

import copy

import torch

from mdps_ray.core.guidance import Denoiser

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


class DeviceError(ValueError):
    """The device asked for cannot run this torch build (a one-line user error, not a retry loop)."""


def check_device(device: torch.device) -> None:
    """Preflight of a CUDA device: torch sees it, and this build has kernels for its compute capability."""
    if device.type != "cuda":
        return
    build = f"torch {torch.__version__} (built for CUDA {torch.version.cuda})"
    if not torch.cuda.is_available():
        raise DeviceError(f"expected a usable NVIDIA GPU for device=cuda, got none: {build} sees no device; the "
                          "driver is likely older than this build needs (CUDA 13 wheels need driver >= 580, CUDA 12.6 "
                          "wheels >= 560): install the torch wheel for your driver, e.g. "
                          "pip install torch --index-url https://download.pytorch.org/whl/cu126")
    major, minor = torch.cuda.get_device_capability(device)
    archs = torch.cuda.get_arch_list()
    if archs and f"sm_{major}{minor}" not in archs and not any(a.startswith(f"sm_{major}") for a in archs):
        raise DeviceError(f"expected a GPU this build supports ({', '.join(archs)}), got compute capability "
                          f"{major}.{minor} ({torch.cuda.get_device_name(device)}) under {build}; install a torch "
                          "wheel built for it")


def set_tf32(device: torch.device, allowed: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions on a CUDA device, explicitly (torch allows it for
    cuDNN by default, so "fp32" on a GPU would not be fp32); a no-op elsewhere."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed


def prepare_unet(
    unet: torch.nn.Module, device: torch.device, channels_last: bool, compile: bool, precision: str = "fp32",
    tf32: bool = False,
) -> torch.nn.Module:
    """Move to ``device`` in the ``precision`` dtype, freeze, optionally convert to NHWC and compile;
    TF32 as ``tf32`` says (:func:`set_tf32`).

    Low precision casts the weights themselves (pure bf16/fp16 inference, as diffusers'
    ``torch_dtype``) rather than autocasting: on CPU autocast re-casts every weight at every call
    and measured slower than fp32 (benchmarks/sampler.py). The cast works on a copy, so the
    caller's fp32 module can still serve other scorers; device moves and NHWC are in place.
    """
    set_tf32(device, tf32)
    unet = unet.to(device).eval().requires_grad_(False)
    if precision != "fp32":
        # nn.Module.to: diffusers' own .to(dtype=…) warns about keep-in-fp32 modules even when there are none
        unet = torch.nn.Module.to(copy.deepcopy(unet), dtype=precision_dtype(precision))
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    if compile:
        unet = torch.compile(unet)  # type: ignore[assignment]
    return unet

"""Training the DDIM prior: the ε-prediction loss and a step, in pure torch.

    t ~ U{t_min, …, t_max − 1},  ε ~ N(0, I),  x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε
    L = E_batch[ reduce_{C,H,W} (ε − ε_θ(x_t, t))² ]       reduce = mean (ours) or sum (paper)

The distributed job (Ray Train) wraps :class:`PriorTrainer`; :func:`fit_prior` is the
single-process loop with a wall-clock budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel

from mdps_ray.config.method import PriorConfig, TrainConfig
from mdps_ray.core.noise import derive_seed
from mdps_ray.core.posterior import q_sample
from mdps_ray.models.prior import alpha_bars, build_unet


def diffusion_loss(
    unet: torch.nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alpha_bars_t: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """ε-prediction loss of a batch: x0, noise (B, C, H, W); t, ᾱ_t (B,). Returns a scalar."""
    x_t = q_sample(x0, alpha_bars_t.to(x0.dtype), noise)
    err = (unet(x_t, t).sample - noise).pow(2).flatten(1)
    per_image = err.sum(dim=1) if reduction == "sum" else err.mean(dim=1)
    return per_image.mean()


def random_crops(x0: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """One ``side`` × ``side`` window per image at a position drawn from ``generator``: (B, C, H, W) →
    (B, C, side, side); images already of that side are returned as they are."""
    h, w = x0.shape[-2:]
    if (h, w) == (side, side):
        return x0
    if side > min(h, w):
        raise ValueError(f"expected training images of at least {side} px for {side} px crops, got {h}x{w}")
    tops = torch.randint(0, h - side + 1, (x0.shape[0],), generator=generator).tolist()
    lefts = torch.randint(0, w - side + 1, (x0.shape[0],), generator=generator).tolist()
    return torch.stack([x[:, t : t + side, left : left + side] for x, t, left in zip(x0, tops, lefts, strict=True)])


@dataclass
class PriorTrainer:
    """Optimiser, EMA and step counter around a UNet; one call of :meth:`step` per batch."""

    unet: UNet2DModel
    prior: PriorConfig
    train: TrainConfig
    generator: torch.Generator
    step_count: int = 0
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.unet.train()
        self.optimizer = torch.optim.Adam(
            self.unet.parameters(), lr=self.train.lr, weight_decay=self.train.weight_decay
        )
        self.ema = EMAModel(self.unet.parameters(), decay=self.train.ema_decay) if self.train.ema_decay else None
        self.alpha_bars = alpha_bars(self.prior).float()

    def draw(self, x0: torch.Tensor, keys: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """t (B,) and ε (B, C, H, W) for a batch.

        With ``keys`` (a stable integer per image), each image's draws come from its own generator
        seeded by (seed, key, step): the same image gets the same t and ε at a step whichever
        worker holds it, so data-parallel training equals single-worker training.
        """
        t_max = self.train.t_max or self.prior.num_train_timesteps
        if keys is None:
            t = torch.randint(self.train.t_min, t_max, (x0.shape[0],), generator=self.generator)
            noise = torch.randn(x0.shape, generator=self.generator)
            return t.to(x0.device), noise.to(x0.device)
        gens = [torch.Generator().manual_seed(derive_seed(self.train.seed, str(k), self.step_count, "train"))
                for k in keys]
        t = torch.stack([torch.randint(self.train.t_min, t_max, (), generator=g) for g in gens])
        noise = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens])
        return t.to(x0.device), noise.to(x0.device)

    def augment(self, x0: torch.Tensor) -> torch.Tensor:
        """A random prior-sized crop per image when the images are larger (a shared tile prior, tiling on),
        then random horizontal and vertical flips per image, when enabled."""
        x0 = random_crops(x0, self.prior.image_size, self.generator)
        if not self.train.flips:
            return x0
        flip_h, flip_v = torch.rand((2, x0.shape[0]), generator=self.generator) < 0.5
        x0 = torch.where(flip_h.view(-1, 1, 1, 1).to(x0.device), x0.flip(-1), x0)
        return torch.where(flip_v.view(-1, 1, 1, 1).to(x0.device), x0.flip(-2), x0)

    @property
    def module(self) -> torch.nn.Module:
        """The UNet itself (unwrapped from DistributedDataParallel when wrapped)."""
        return getattr(self.unet, "module", self.unet)

    def step(self, x0: torch.Tensor, keys: list[int] | None = None) -> float:
        """One optimiser step on a batch x0 in [−1, 1], (B, C, H, W); returns the loss."""
        x0 = self.augment(x0)
        t, noise = self.draw(x0, keys)
        ab = self.alpha_bars.to(x0.device)[t]
        loss = diffusion_loss(self.unet, x0, t, noise, ab, self.train.loss_reduction)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.train.grad_clip or float("inf")
        self.grad_norms.append(float(torch.nn.utils.clip_grad_norm_(self.unet.parameters(), max_norm)))
        self.optimizer.step()
        if self.ema is not None:
            self.ema.step(self.unet.parameters())
        self.step_count += 1
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def final_unet(self) -> UNet2DModel:
        """The UNet to save: a copy carrying the EMA weights when EMA is on, in eval mode."""
        out = build_unet(self.prior)
        out.load_state_dict(self.module.state_dict())
        if self.ema is not None:
            self.ema.copy_to(out.parameters())
        return out.eval().requires_grad_(False)


def fit_prior(
    images: torch.Tensor,
    prior: PriorConfig,
    train: TrainConfig,
    max_steps: int,
    max_seconds: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> PriorTrainer:
    """Train a fresh prior on normal images (N, 3, H, W) in [−1, 1], single process.

    Stops after ``max_steps`` or ``max_seconds`` of wall time, whichever comes first.
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected training images of shape (N, 3, H, W), got {tuple(images.shape)}")
    torch.manual_seed(train.seed)  # weight initialisation only; batches use the generator
    trainer = PriorTrainer(build_unet(prior).to(images.device), prior, train, torch.Generator().manual_seed(train.seed))
    start = time.monotonic()
    while trainer.step_count < max_steps:
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            break
        idx = torch.randint(0, images.shape[0], (train.batch_size,), generator=trainer.generator)
        loss = trainer.step(images[idx.to(images.device)])
        if on_step is not None:
            on_step(trainer.step_count, loss)
    return trainer

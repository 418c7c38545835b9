"""Keyed randomness: every row of a batch draws from its own generator.

A row is one posterior sample of one image. Its seed is derived from
(run seed, image id, sample index, stage), so the noise it sees never depends on which other
images share its batch, on the batch size, the shard, or the number of workers — nor on the
device: the generators are CPU generators and the noise is drawn on the host in fp32, then moved
(a CUDA generator is Philox and would give other numbers for the same seed, so a prior calibrated
on CPU would meet other noise on a GPU).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

_SEED_BITS = 63


def derive_seed(run_seed: int, image_id: str, sample_index: int, stage: str) -> int:
    """A 63-bit seed from (run seed, image id, sample index, stage), stable across processes."""
    key = f"{run_seed}\x1f{image_id}\x1f{sample_index}\x1f{stage}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _SEED_BITS)


class RowNoise:
    """Standard normal noise for a batch, drawn row by row from per-row generators.

    Args:
        seeds: one seed per row, length B.
        device: where the noise is used (the caller's device); it is drawn on the host.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.generators)

    def host_randn(self, row_shape: Sequence[int]) -> torch.Tensor:
        """z of shape (B, *row_shape) in fp32 on the host; row b comes from generator b only."""
        return torch.stack([torch.randn(tuple(row_shape), generator=g) for g in self.generators])

    def randn(self, row_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """:meth:`host_randn` on the caller's device and dtype: the same numbers on every device."""
        return self.host_randn(row_shape).to(self.device, dtype)


def sample_seeds(run_seed: int, image_ids: Sequence[str], n_samples: int, stage: str) -> list[int]:
    """Seeds for the expanded batch, row b = image b // n, sample b % n (image-major order)."""
    return [derive_seed(run_seed, image_id, j, stage) for image_id in image_ids for j in range(n_samples)]

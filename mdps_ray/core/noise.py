"""Keyed randomness: every row of a batch draws from its own generator.

A row is one posterior sample of one image. Its seed is derived from
(run seed, image id, sample index, stage), so the noise it sees never depends on which other
images share its batch, on the batch size, the shard, or the number of workers.
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
        device: where the generators live and the noise is drawn (the caller's device).
    """

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.device = device

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, row_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """z of shape (B, *row_shape); row b comes from generator b only."""
        rows = [torch.randn(tuple(row_shape), generator=g, device=self.device, dtype=dtype) for g in self.generators]
        return torch.stack(rows)


def sample_seeds(run_seed: int, image_ids: Sequence[str], n_samples: int, stage: str) -> list[int]:
    """Seeds for the expanded batch, row b = image b // n, sample b % n (image-major order)."""
    return [derive_seed(run_seed, image_id, j, stage) for image_id in image_ids for j in range(n_samples)]

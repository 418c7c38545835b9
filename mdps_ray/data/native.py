"""``tiling.read_size="native"``: the side of the normal training images, fixed in the model at training.

A camera on a line gives images of one size; reading them at that size keeps a 2 px flaw at 2 px. The
side is read from the headers of an even sample of the training images (no full decode), which must be
square and of one size; the trained model's config then holds that side, so scoring reads every image
at it (an image of another size is resized to it, as with a given side).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from mdps_ray.config.method import MAX_READ_SIDE, ConfigError, MdpsConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.storage.uris import filesystem

HEADER_SAMPLE = 32  # training images whose header is read to fix the native side


def header_size(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[int, int]:
    """(W, H) of the image at ``uri`` from its header (only the first bytes are read)."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as f, Image.open(f) as im:
        w, h = im.size
    return int(w), int(h)


def native_side(uris: Sequence[str], storage_options: dict[str, Any] | None = None,
                sample: int = HEADER_SAMPLE) -> int:
    """The one square side of the images at ``uris``, checked on an even sample of at most ``sample``."""
    if not uris:
        raise ConfigError("expected training images to fix tiling.read_size=native from, got none")
    step = max(1, len(uris) // sample)
    first, seen = None, None
    for uri in list(uris)[::step][:sample]:
        w, h = header_size(uri, storage_options)
        if w != h:
            raise ConfigError(f"expected square normal images for tiling.read_size=native, got {w}x{h} ({uri}); "
                              "give tiling.read_size as a side in pixels (images are resized to it)")
        if first is None:
            first, seen = w, uri
        elif w != first:
            raise ConfigError(f"expected normal images of one size for tiling.read_size=native, got {first}x{first} "
                              f"({seen}) and {w}x{w} ({uri}); give tiling.read_size as a side in pixels")
    assert first is not None
    return first


def resolve_read_size(config: MdpsConfig, uris: Sequence[str], storage_options: dict[str, Any] | None = None
                      ) -> MdpsConfig:
    """``config`` with ``tiling.read_size="native"`` replaced by the training images' side (else unchanged)."""
    if not config.tiling.enabled or config.tiling.read_size != "native":
        return config
    side = native_side(uris, storage_options)
    tile = config.prior.image_size
    if not tile <= side <= MAX_READ_SIDE:
        raise ConfigError(f"expected a native side between the tile ({tile} px) and {MAX_READ_SIDE} px for "
                          f"tiling.read_size=native, got {side} px images; give tiling.read_size as a side in pixels")
    return apply_overrides(config, {"tiling.read_size": side}, source="the training images")

"""tiling.read_size=native: fixed from the training images' headers, kept by the model, refused unresolved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mdps_ray.config.jobs import ScoreJobConfig
from mdps_ray.config.method import ConfigError, MdpsConfig, TilingConfig
from mdps_ray.config.overrides import apply_overrides
from mdps_ray.data.native import header_size, native_side, resolve_read_size
from mdps_ray.data.records import ImageRecord
from mdps_ray.models.prior import build_unet
from mdps_ray.orchestration.score_plan import method_config
from mdps_ray.storage.checkpoints import load_prior, save_prior
from mdps_ray.workflows import final_priors, train_local_priors
from tests.helpers.models import CONFIG, TINY_PRIOR, make_scorer

NATIVE = CONFIG.model_copy(update={"tiling": TilingConfig(enabled=True, read_size="native", stride=16)})


def _pngs(folder: Path, sizes: list[tuple[int, int]]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    uris = []
    for i, (w, h) in enumerate(sizes):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        uris.append(str(path))
    return uris


def test_native_resolves_to_the_training_images_side_and_hashes_as_that_side_given(tmp_path: Path) -> None:
    uris = _pngs(tmp_path, [(48, 48)] * 5)
    assert header_size(uris[0]) == (48, 48) and native_side(uris) == 48
    resolved = resolve_read_size(NATIVE, uris)
    given = apply_overrides(NATIVE, ["tiling.read_size=48"])
    assert resolved.tiling.read_size == 48 and resolved.read_size == 48
    assert resolved == given and resolved.digest() == given.digest() != NATIVE.digest()
    assert apply_overrides(CONFIG, ["tiling.enabled=true", "tiling.stride=16", "tiling.read_size=native"]) == NATIVE


def test_a_given_side_or_tiling_off_is_left_as_it_is(tmp_path: Path) -> None:
    uris = _pngs(tmp_path, [(48, 48)])
    given = apply_overrides(NATIVE, ["tiling.read_size=32"])
    assert resolve_read_size(given, uris) is given
    off = MdpsConfig()
    assert resolve_read_size(off, uris) is off


@pytest.mark.parametrize(("sizes", "message"), [
    ([(48, 48), (64, 32)], r"expected square normal images for tiling.read_size=native, got 64x32 \(.*001.png\)"),
    ([(48, 48), (40, 40)], r"expected normal images of one size .* got 48x48 \(.*000.png\) and 40x40 \(.*001.png\)"),
    ([(8, 8)], r"expected a native side between the tile \(16 px\) and 8192 px .* got 8 px images"),
])
def test_images_native_cannot_describe_are_refused_in_one_line(tmp_path: Path, sizes: list[tuple[int, int]],
                                                               message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_read_size(NATIVE, _pngs(tmp_path, sizes))


def test_an_unresolved_native_side_is_refused_where_a_side_is_needed() -> None:
    with pytest.raises(ConfigError, match=r"expected tiling\.read_size as a side in pixels here, got native"):
        _ = NATIVE.read_size
    with pytest.raises(ValueError, match=r"expected tiling\.read_size in pixels for the scorer, got native"):
        make_scorer(build_unet(TINY_PRIOR), tiling=NATIVE.tiling)


def test_a_model_trained_native_keeps_its_side_and_scoring_refuses_native(tmp_path: Path) -> None:
    uris = _pngs(tmp_path / "train", [(32, 32)] * 4)
    records = [ImageRecord(uri=u, image_id=f"c/train/good/{i}", category="c", split="train", defect_type="good",
                           label=0, mask_uri=None) for i, u in enumerate(uris)]
    config = resolve_read_size(NATIVE, uris)
    trainers = train_local_priors(records, config, max_steps=1, max_seconds=None, device=torch.device("cpu"))
    model = tmp_path / "model"
    save_prior(final_priors(trainers, config), config, str(model))
    assert load_prior(str(model)).config.read_size == 32
    job = ScoreJobConfig(model=str(model), data=str(tmp_path / "train"), out=str(tmp_path / "out"),
                         method={"tiling.read_size": "native"})
    with pytest.raises(ConfigError, match=r"expected tiling\.read_size in pixels to score .*, got native"):
        method_config(job)

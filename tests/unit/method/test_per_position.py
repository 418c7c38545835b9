"""Per-position priors: rows reach their tile's prior, scoring stays per-image, the model round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mdps_ray.api import Detector
from mdps_ray.config.method import MdpsConfig, TilingConfig
from mdps_ray.core.tiles import by_position
from mdps_ray.method.positions import position_tiles, prior_count
from mdps_ray.models.prior import build_unet
from mdps_ray.storage.checkpoints import CheckpointError, load_prior, save_prior
from mdps_ray.workflows import final_priors, train_local_priors
from tests.helpers.models import CONFIG, TINY_PRIOR, make_scorer

PER_POSITION = TilingConfig(enabled=True, read_size=32, stride=16, prior="per_position")  # 16 px tiles: 2 x 2
CFG = CONFIG.model_copy(update={"tiling": PER_POSITION})
IDS = ["c/test/good/000", "c/test/crack/001", "c/test/good/002"]


def nets(count: int = 4) -> list[torch.nn.Module]:
    out = []
    for k in range(count):
        torch.manual_seed(k)
        out.append(build_unet(TINY_PRIOR).eval().requires_grad_(False))
    return out


def test_each_row_goes_to_the_denoiser_of_its_tile() -> None:
    # rows (image b, tile k, sample j) = (b·T + k)·n + j; denoiser k answers k everywhere
    denoisers = [lambda x, t, k=k: torch.full_like(x, float(k)) for k in range(3)]
    eps = by_position(denoisers, n_samples=2)(torch.zeros((12, 1, 2, 2)), torch.zeros(12, dtype=torch.long))
    assert eps[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="whole images of 3 tiles x 2 samples, got 8 rows"):
        by_position(denoisers, 2)(torch.zeros((8, 1, 2, 2)), torch.zeros(8, dtype=torch.long))


def test_the_tile_of_a_position_is_that_window_of_the_image() -> None:
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    assert prior_count(CFG) == 4 and prior_count(CONFIG) == 1
    assert torch.equal(position_tiles(images, CFG, 3), images[..., 16:32, 16:32])
    with pytest.raises(ValueError, match=r"tile position in \[0, 4\), got 4"):
        position_tiles(images, CFG, 4)


def test_a_per_position_scorer_is_batch_invariant_and_uses_every_prior() -> None:
    priors = nets()
    scorer = make_scorer([lambda x, t, p=p: p(x, t).sample for p in priors],  # type: ignore[arg-type]
                         tiling=PER_POSITION, tile_stride=16)
    y = torch.rand((3, 3, 32, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = scorer.score(y, IDS)
    for i in range(3):
        alone = scorer.score(y[i : i + 1], IDS[i : i + 1])
        assert torch.allclose(batch.anomaly_map[i], alone.anomaly_map[0], atol=1e-5)
    shared = make_scorer(priors[0], tiling=PER_POSITION.model_copy(update={"prior": "shared"}), tile_stride=16)
    same = shared.score(y, IDS)
    top_left, bottom_right = (slice(None), slice(None), slice(0, 8), slice(0, 8)), (..., slice(24, 32), slice(24, 32))
    # tile 0 is prior 0 in both: its corner (seen by that tile only) agrees; the last tile's prior differs
    assert torch.allclose(batch.reconstruction[top_left], same.reconstruction[top_left], atol=1e-5)
    assert not torch.allclose(batch.reconstruction[bottom_right], same.reconstruction[bottom_right], atol=1e-3)


def test_a_scorer_refuses_a_prior_count_that_does_not_match_the_tiling(tiny_unet: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"expected 4 prior\(s\) for tiling.prior per_position, got 3"):
        make_scorer([lambda x, t: x] * 3, tiling=PER_POSITION, tile_stride=16)
    with pytest.raises(ValueError, match=r"expected 4 prior\(s\) for tiling.prior per_position, got 1"):
        make_scorer(tiny_unet, tiling=PER_POSITION, tile_stride=16)


def test_per_position_needs_tiling_on() -> None:
    with pytest.raises(ValueError, match=r"expected tiling\.enabled=true with tiling\.prior=per_position"):
        MdpsConfig(tiling=TilingConfig(prior="per_position"))


def test_per_position_priors_save_and_load_bit_exact_and_score(tmp_path: Path) -> None:
    priors = nets()
    model = str(tmp_path / "model")
    digest = save_prior(priors, CFG, model)  # type: ignore[arg-type]
    assert sorted(p.name for p in (tmp_path / "model" / "positions").iterdir()) == ["0", "1", "2", "3"]
    loaded = load_prior(model)
    assert loaded.digest == digest and isinstance(loaded.unet, list) and len(loaded.unet) == 4
    for a, b in zip(priors, loaded.unet, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    y = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert Detector.load(model).score(y).anomaly_map.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="expected 4 prior"):
        save_prior(priors[:3], CFG, str(tmp_path / "short"))  # type: ignore[arg-type]
    (tmp_path / "model" / "positions" / "2" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="positions/2/unet, found no weights"):
        load_prior(model)


def test_local_training_fits_one_prior_per_position_on_its_tiles(synthetic_root: Path) -> None:
    from mdps_ray.data.records import list_mvtec

    records = list_mvtec(str(synthetic_root), "train")[:4]
    trainers = train_local_priors(records, CFG, max_steps=2, max_seconds=None, device=torch.device("cpu"))
    assert [t.step_count for t in trainers] == [2, 2, 2, 2]
    unets = final_priors(trainers, CFG)
    assert isinstance(unets, list) and len(unets) == 4
    assert not isinstance(final_priors(trainers[:1], CONFIG), list)


def test_the_tiling_prior_key_leaves_hashes_of_shared_tilings_as_they_were() -> None:
    import hashlib
    import json

    from mdps_ray.config.method import method_hash

    shared = CONFIG.model_copy(update={"tiling": PER_POSITION.model_copy(update={"prior": "shared"})})
    data = shared.model_dump(mode="json")
    del data["tiling"]["prior"]  # the config as it was hashed before the key existed
    for section, key, value in (("runtime", "tf32", False), ("maps", "normalise", "none")):  # the older omissions
        if data[section].get(key) == value:
            del data[section][key]
    before = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert shared.digest() == before != CFG.digest()
    parts = (shared.prior, shared.sampler, shared.maps, shared.score)
    assert method_hash(*parts, shared.tiling) != method_hash(*parts, CFG.tiling)

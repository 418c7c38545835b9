"""The holdout rule: an image's side is decided by its own id, so a folder that grows moves nothing."""

from __future__ import annotations

import random

import pytest

from mdps_ray.data.records import ImageRecord
from mdps_ray.data.splits import holdout_key, split_holdout


def records(names: list[str]) -> list[ImageRecord]:
    return [ImageRecord(uri=f"/data/{n}.png", image_id=n, category="c", split="train", defect_type=None, label=0,
                        mask_uri=None) for n in names]


def test_a_growing_folder_never_moves_a_training_image_into_calibration() -> None:
    """The old rule took the round(f·N) smallest keys: 24 of 80 simulated growths moved training images."""
    rng = random.Random(0)
    for trial in range(80):
        names = [f"t{trial}-{i}" for i in range(rng.randint(10, 60))]
        before_train, before_hold = split_holdout(records(names), 0.1)
        grown = names + [f"t{trial}-new{i}" for i in range(rng.randint(1, 40))]
        _after_train, after_hold = split_holdout(records(grown), 0.1)
        held_now = {r.image_id for r in after_hold}
        moved = [r.image_id for r in before_train if r.image_id in held_now]
        assert not moved, f"growth {trial} moved training images {moved} into calibration"
        kept = {r.image_id for r in before_hold} - held_now
        assert not kept or len(before_hold) == 1  # only the forced single holdout of a small folder may return


def test_an_image_is_held_out_when_its_key_is_below_the_fraction() -> None:
    names = [f"img{i:03d}" for i in range(200)]
    train, hold = split_holdout(records(names), 0.25)
    assert {r.image_id for r in hold} == {n for n in names if holdout_key(n) < 0.25}
    assert len(train) + len(hold) == 200 and 30 <= len(hold) <= 70
    assert [r.image_id for r in train] == [n for n in names if holdout_key(n) >= 0.25]  # input order kept


def test_each_side_keeps_at_least_one_image() -> None:
    names = ["a", "b"]
    train, hold = split_holdout(records(names), 0.01)
    assert len(train) == 1 and len(hold) == 1 and hold[0].image_id == min(names, key=holdout_key)
    train, hold = split_holdout(records(names), 0.99)
    assert len(train) == 1 and len(hold) == 1 and train[0].image_id == max(names, key=holdout_key)
    with pytest.raises(ValueError, match="at least 2 training images"):
        split_holdout(records(["a"]), 0.1)
    with pytest.raises(ValueError, match="0 < holdout fraction < 1"):
        split_holdout(records(names), 1.0)

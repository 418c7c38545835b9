"""The failure contract, one hostile case a row: each ends as one line with a documented exit code, or as an
error row of a run that commits, never a traceback; no secret is shown anywhere; nothing is written outside
``--out``; and, where a row says so, the same command succeeds once the cause is removed.

Exit codes (README): 0 done; 2 bad inputs or configuration, one line; 3 storage unavailable or disk full,
resumable; 130 interrupted; 143 terminated. Every row runs ``mdps`` in this process (on the session's embedded
Ray where it gets that far) with a credential-looking storage option whose value must never appear.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mdps_ray.cli.commands import main

SECRET = "hunter2-s3cr3t-value"
ROWS_MAY_FAIL = ("--set", "max_error_fraction=0.6")  # the small row cases have 1 bad row of 2-3


@dataclass
class World:
    """A model, a dataset and an output prefix of this row's own, under one folder."""

    root: Path
    model: Path
    data: Path
    out: Path

    def score(self, *extra: str, data: Path | str | None = None, model: Path | str | None = None,
              out: Path | str | None = None) -> list[str]:
        return ["score", "--model", str(model or self.model), "--data", str(data or self.data), "--out",
                str(out or self.out), "--set", f"storage_options.secret={SECRET}", *extra]


@dataclass
class Case:
    """setup(world) builds the hostile situation and returns the argv; code and fragment are what must come back
    (fragment: in the one line, or, with code 0, in an error row); fix(world) removes the cause, after which the
    same argv must exit 0."""

    name: str
    setup: Callable[[World], list[str]]
    code: int
    fragment: str
    fix: Callable[[World], None] | None = None


def _weights(w: World) -> Path:
    return w.model / "unet" / "diffusion_pytorch_model.safetensors"


def _truncate(w: World) -> list[str]:
    shutil.copy(_weights(w), w.root / "weights.bak")
    _weights(w).write_bytes(_weights(w).read_bytes()[:100])
    return w.score()


def _restore(w: World) -> None:
    shutil.copy(w.root / "weights.bak", _weights(w))


def _replace(w: World) -> list[str]:
    from safetensors.torch import load_file, save_file

    shutil.copy(_weights(w), w.root / "weights.bak")
    state = load_file(str(_weights(w)))
    first = sorted(state)[0]
    save_file({**state, first: state[first] + 1.0}, str(_weights(w)))
    return w.score()


def _edit_json(name: str, edit: Callable[[dict], object]) -> Callable[[World], list[str]]:
    def setup(w: World) -> list[str]:
        path = w.model / name
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
        return w.score()
    return setup


def _write(rel: str, text: str, *argv_of: str) -> Callable[[World], list[str]]:
    """Write a file under the row's folder; argv_of names what it becomes: data, out or model."""
    def setup(w: World) -> list[str]:
        path = w.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return w.score(**{k: path for k in argv_of})
    return setup


def _manifest(rows: list[tuple[str, str]], extra_col: str | None = "label") -> Callable[[World], list[str]]:
    def setup(w: World) -> list[str]:
        path = w.root / "manifest.csv"
        good = sorted((w.data / "test").rglob("*.png"))
        lines = ["uri" + (f",{extra_col}" if extra_col else "")]
        for uri, label in rows:
            uri = uri.replace("{good0}", str(good[0])).replace("{good1}", str(good[1]))
            lines.append(uri + (f",{label}" if extra_col else ""))
        path.write_text("\n".join(lines) + "\n")
        return w.score(*ROWS_MAY_FAIL, data=path)
    return setup


def _folder(files: dict[str, str | None]) -> Callable[[World], list[str]]:
    """A folder of images: a name maps to 'good' (a copy of a real test image), text, or None (a loop link)."""
    def setup(w: World) -> list[str]:
        folder = w.root / "folder"
        folder.mkdir()
        good = sorted((w.data / "test").rglob("*.png"))
        for i, (name, kind) in enumerate(files.items()):
            if kind == "good":
                shutil.copy(good[i], folder / name)
            elif kind is None:
                os.symlink(".", folder / name)
            else:
                (folder / name).write_text(kind)
        return w.score(*ROWS_MAY_FAIL, data=folder)
    return setup


def _masked(w: World) -> list[str]:
    good = sorted((w.data / "test").rglob("*.png"))
    (w.root / "notes_mask.png").write_text("not an image")
    path = w.root / "manifest.csv"
    path.write_text(f"uri,label,mask_uri\n{good[0]},1,{w.root / 'notes_mask.png'}\n{good[1]},0,\n")
    return w.score(*ROWS_MAY_FAIL, data=path)


def _ban(key: str) -> Callable[[World], list[str]]:
    return lambda w: w.score("--set", key)


def _calibrate_non_model(w: World) -> list[str]:
    return ["calibrate", "--model", str(w.data), "--data", str(w.data)]


def _resume_other(w: World) -> list[str]:
    (w.out / "r" / "_staging").mkdir(parents=True)
    (w.out / "r" / "_staging" / "identity.json").write_text(json.dumps({"model_digest": "another", "config_hash": "x",
                                                                       "data": "y", "split": "test"}))
    return w.score("--run-id", "r")


def _clear_staging(w: World) -> None:
    shutil.rmtree(w.out / "r")


CASES = [
    # the model
    Case("model folder missing", lambda w: w.score(model=w.root / "nowhere"), 2, "mdps.json"),
    Case("model path is a file", _write("model.txt", "x", "model"), 2, "mdps.json"),
    Case("weights truncated", _truncate, 2, "loadable model", _restore),
    Case("weights replaced", _replace, 2, "weights digest", _restore),
    Case("unet/config.json missing", lambda w: ((w.model / "unet" / "config.json").unlink(), w.score())[1], 2,
         "loadable model"),
    Case("mdps.json not JSON", lambda w: ((w.model / "mdps.json").write_text("{no"), w.score())[1], 2, "mdps.json"),
    Case("mdps.json without weights_digest", _edit_json("mdps.json", lambda d: d.pop("weights_digest")), 2,
         "weights_digest"),
    Case("mdps.json with an unknown config key", _edit_json("mdps.json", lambda d: d["config"].update(bogus=1)), 2,
         "bogus"),
    Case("pickle weights only", lambda w: (_weights(w).rename(_weights(w).with_suffix(".bin")), w.score())[1], 2,
         "pickle"),
    Case("calibration threshold NaN", _edit_json("calibration.json", lambda d: d.update(score_threshold=float("nan"))),
         2, "score_threshold"),
    Case("calibration threshold text", _edit_json("calibration.json", lambda d: d.update(score_threshold="0.3")), 2,
         "score_threshold"),
    Case("calibration threshold -1e9", _edit_json("calibration.json", lambda d: d.update(score_threshold=-1e9)), 2,
         "within the normal scores"),
    Case("calibration with an unknown key", _edit_json("calibration.json", lambda d: d.update(surprise=1)), 2,
         "surprise"),
    Case("calibration without its threshold", _edit_json("calibration.json", lambda d: d.pop("score_threshold")), 2,
         "score_threshold"),
    Case("calibration not JSON", lambda w: ((w.model / "calibration.json").write_text("{"), w.score())[1], 2,
         "calibration.json"),
    Case("calibration level model NaN",
         _edit_json("calibration.json", lambda d: d.update(level_model={"beta": [float("nan"), 0, 0], "lo": 0.1,
                                                                        "hi": 1})), 2, "level_model"),
    # paths
    Case("--out is a file", _write("out.txt", "x", "out"), 2, "is a file",
         lambda w: (w.root / "out.txt").unlink()),
    Case("--out under a file", lambda w: (_write("blocker", "x")(w), w.score(out=w.root / "blocker" / "runs"))[1],
         2, "lies under the file"),
    Case("--data missing", lambda w: w.score(data=w.root / "nowhere"), 2, "expected a dataset"),
    Case("--data a text file", _write("notes.txt", "hello", "data"), 2, "another kind"),
    Case("--data an empty folder", lambda w: ((w.root / "empty").mkdir(), w.score(data=w.root / "empty"))[1], 2,
         "found none", lambda w: shutil.copy(sorted((w.data / "test").rglob("*.png"))[0], w.root / "empty" / "a.png")),
    Case("--data a header-only manifest", _manifest([]), 2, "found none"),
    Case("manifest without a uri column", _write("m.csv", "path\na.png\n", "data"), 2, "'uri' column"),
    Case("manifest with a bad label", _manifest([("{good0}", "0"), ("{good1}", "nine")]), 2, "'nine' for"),
    Case("--run-id with a separator", lambda w: w.score("--run-id", "../escape"), 2, "run_id"),
    # configuration
    Case("negative guidance", _ban("sampler.stage2.rho=-1"), 2, "sampler.stage2.rho"),
    Case("unknown key", _ban("sampler.nosuch=1"), 2, "nosuch"),
    Case("prior override at scoring", _ban("prior.image_size=32"), 2, "prior.*"),
    Case("impossible date", _ban("date=2026-13-45"), 2, "date"),
    Case("colon for equals", _ban(f"storage_options.secret:{SECRET}"), 2, "KEY=VALUE"),
    Case("credential as a list", _ban(f"storage_options={{key: [{SECRET}]}}"), 2, "storage_options.key"),
    Case("zero batch", _ban("batch_size=0"), 2, "batch_size"),
    Case("--config missing", lambda w: w.score("--config", str(w.root / "nope.yaml")), 2, "nope.yaml"),
    Case("--config broken YAML", lambda w: (_write("bad.yaml", "a: [1,\n")(w), w.score("--config",
                                                                                         str(w.root / "bad.yaml")))[1],
         2, "bad.yaml"),
    Case("calibrate a folder that is no model", _calibrate_non_model, 2, "model directory"),
    Case("resume of another computation", _resume_other, 2, "was started with", _clear_staging),
    # rows: error rows of a run that commits
    Case("one undecodable image among good ones", _folder({"a.png": "good", "b.png": "good", "c.png": "not png"}),
         0, "not a readable image"),
    Case("an unknown protocol row", _manifest([("{good0}", "0"), ("foo://bucket/x.png", "")]), 0,
         "Protocol not known"),
    Case("an http row whose host does not answer", _manifest([("{good0}", "0"), ("http://127.0.0.1:9/x.png", "")]),
         0, "unreachable after retries"),
    Case("a mask that is not an image", _masked, 0, "not a readable image"),
    Case("a link that loops in the data folder", _folder({"a.png": "good", "b.png": "good", "loop": None}), 0, ""),
]


@pytest.fixture
def world(tiny_model: Path, synthetic_root: Path, tmp_path: Path) -> World:
    root = tmp_path / "world"
    root.mkdir()
    shutil.copytree(tiny_model, root / "model")
    shutil.copytree(synthetic_root, root / "data")
    return World(root, root / "model", root / "data", root / "out")


def _tree(root: Path, skip: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*") if skip not in p.parents and p != skip
            and not p.is_symlink()}


def _ray_logs() -> list[Path]:
    """The log files of the session's Ray (where actors' output and errors land)."""
    import ray

    if not ray.is_initialized():
        return []
    logs = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    return [f for f in logs.rglob("*") if f.is_file() and f.stat().st_size < 50_000_000]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse usage errors
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_hostile_case_ends_as_the_contract_says(case: Case, world: World, ray_local,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = case.setup(world)
    before = _tree(world.root, world.out)
    code, out, err = _run(argv, capsys)
    assert "Traceback" not in out + err, err[-3000:]
    assert SECRET not in out + err
    assert code == case.code, (code, err[-2000:])
    if code:
        lines = [line for line in err.strip().splitlines() if line.startswith("mdps")]
        assert len(lines) == 1 and "error:" in lines[0], err[-2000:]
        assert case.fragment in lines[0], (case.fragment, lines[0])
    else:  # the run committed, the bad row is an error row naming its cause
        run = Path(out.strip().splitlines()[-1])
        assert (run / "_SUCCESS").exists()
        errors = [r["error"] for p in (run / "errors").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
        assert case.fragment == "" or any(case.fragment in e for e in errors), errors
    written = {p for p in _tree(world.root, world.out) if p not in before}
    assert not written, f"written outside --out: {sorted(written)}"
    if world.out.exists():
        for f in world.out.rglob("*"):
            assert not f.is_file() or SECRET.encode() not in f.read_bytes(), f
    assert not [f for f in _ray_logs() if SECRET.encode() in f.read_bytes()], "a secret in Ray's logs"
    if case.fix is not None:
        case.fix(world)
        code, _, err = _run(argv, capsys)
        assert code == 0, err[-2000:]


def test_the_table_covers_at_least_40_hostile_cases() -> None:
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


def test_an_image_that_exists_under_a_loop_is_scored_once(world: World, ray_local,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = _folder({"a.png": "good", "b.png": "good", "loop": None})(world)
    code, out, _ = _run(argv, capsys)
    assert code == 0
    run = Path(out.strip().splitlines()[-1])
    rows = pq.read_table(run / "results").to_pylist()
    assert sorted(Path(r["uri"]).name for r in rows) == ["a.png", "b.png"]


def test_an_input_fixed_after_a_failed_attempt_is_keyed_by_the_content_scored(
        world: World, ray_local, capsys: pytest.CaptureFixture[str]) -> None:
    """The retried row kept the failed attempt's content_key, so the nightly ledger named content never scored."""
    from mdps_ray.data.manifest import build_manifest
    from mdps_ray.data.records import list_folder

    _folder({"a.png": "good", "b.png": "good", "c.png": "not png"})(world)
    strict = world.score("--run-id", "r", "--set", "max_error_fraction=0", data=world.root / "folder")
    code, _, err = _run(strict, capsys)
    assert code == 2 and "error" in err  # c.png staged as an error row, nothing committed
    folder = world.root / "folder"
    shutil.copy(folder / "a.png", folder / "c.png")  # the input is fixed
    code, out, err = _run(strict, capsys)
    assert code == 0, err[-2000:]
    rows = {Path(r["uri"]).name: r for r in pq.read_table(Path(out.strip().splitlines()[-1]) / "results").to_pylist()}
    fresh = {Path(u).name: k for u, k in zip(*build_manifest(list_folder(str(folder))).select(
        ["uri", "content_key"]).to_pydict().values(), strict=True)}
    assert {n: r["content_key"] for n, r in rows.items()} == fresh

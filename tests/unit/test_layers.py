"""The layering rule, checked over the whole package: every import points down the layer order.

    config → core → models → method → storage → data → metrics → api → {workflows, visualization, testing}
    → {orchestration, monitoring} → cli

A module may import its own package and any package of a lower layer, never one of its own layer
or above. On top: the core is pure (torch and the standard library), only orchestration imports
Ray, and metrics never do I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mdps_ray"
README = PKG.parent / "README.md"
LAYERS: dict[str, int] = {
    "config": 0,
    "core": 1,
    "models": 2,
    "method": 3,
    "storage": 4,
    "data": 5,
    "metrics": 6,
    "api": 7,
    "workflows": 8,
    "visualization": 8,
    "testing": 8,
    "orchestration": 9,
    "monitoring": 9,
    "cli": 10,
}
CORE_ALLOWED = {"torch", "math", "hashlib", "functools", "typing", "collections", "dataclasses", "__future__"}
IO_MODULES = {"fsspec", "s3fs", "pyarrow", "PIL", "safetensors", "io", "os", "pathlib", "urllib"}


def _unit(path: Path) -> str:
    """The layer unit of a module: its top-level package, or its own name at the package root."""
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """Fully dotted names of every module ``path`` imports (at any depth, lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "mdps_ray":
                names |= {f"mdps_ray.{a.name}" for a in node.names}
    return names


def _modules() -> list[Path]:
    return [p for p in sorted(PKG.rglob("*.py")) if p.name != "__init__.py" or p.parent != PKG]


def test_every_module_belongs_to_a_layer() -> None:
    units = {_unit(p) for p in _modules()}
    assert units <= set(LAYERS), f"modules outside the layer map: {units - set(LAYERS)}"


def test_imports_point_down_the_layer_order() -> None:
    bad = []
    for path in _modules():
        own = _unit(path)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "mdps_ray" or len(parts) < 2 or parts[1] == "__version__":
                continue
            other = parts[1]
            if other != own and LAYERS[other] >= LAYERS[own]:
                bad.append(f"{path.relative_to(PKG)} ({own}, layer {LAYERS[own]}) imports {name} "
                           f"({other}, layer {LAYERS[other]})")
    assert not bad, "\n".join(bad)


def test_core_imports_only_torch_and_the_standard_library() -> None:
    for path in sorted((PKG / "core").glob("*.py")):
        outside = {n for n in _imports(path) if n.split(".")[0] not in CORE_ALLOWED | {"mdps_ray"}}
        upward = {n for n in _imports(path) if n.startswith("mdps_ray.") and not n.startswith("mdps_ray.core")}
        assert not outside and not upward, f"{path.name} imports {outside | upward}"


def test_only_orchestration_imports_ray() -> None:
    for path in _modules():
        if _unit(path) == "orchestration":
            continue
        assert not any(n.split(".")[0] == "ray" for n in _imports(path)), f"{path.relative_to(PKG)} imports ray"


# Arrow tables in memory (the reduce's shards) are data, not I/O; Arrow's file and filesystem modules are I/O.
IN_MEMORY = {"pyarrow", "pyarrow.compute"}


def test_metrics_never_read_storage() -> None:
    for path in sorted((PKG / "metrics").glob("*.py")):
        found = {n for n in _imports(path) if (n.split(".")[0] in IO_MODULES and n not in IN_MEMORY)
                 or n.startswith(("mdps_ray.storage", "mdps_ray.data"))}
        assert not found, f"{path.name} imports {found}: metrics get their data from loaders they are given"


def test_the_readme_layout_map_names_every_folder_and_root_module() -> None:
    text = README.read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[: layout.index("\n## ", 1)]
    for unit in LAYERS:
        is_pkg = (PKG / unit).is_dir()
        entry = f"mdps_ray/{unit}/" if is_pkg else f"mdps_ray/{unit}.py"
        assert entry in layout, f"README's Layout does not name {entry}"

"""The layering rule: the core is pure, and only orchestration imports Ray."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "mdps_ray"
CORE_ALLOWED = {"torch", "math", "hashlib", "typing", "collections", "dataclasses", "__future__", "mdps_ray"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
            if node.module.startswith("mdps_ray") and not node.module.startswith("mdps_ray.core"):
                names.add(node.module)
    return names


def test_core_imports_only_torch_and_the_standard_library() -> None:
    for path in sorted((PKG / "core").glob("*.py")):
        extra = {n for n in _imports(path) if n.split(".")[0] not in CORE_ALLOWED or n.startswith("mdps_ray.")}
        assert not extra, f"{path.name} imports {extra}"


def test_only_orchestration_imports_ray() -> None:
    for path in sorted(PKG.rglob("*.py")):
        if "orchestration" in path.parts:
            continue
        assert "ray" not in _imports(path), f"{path.relative_to(PKG)} imports ray"

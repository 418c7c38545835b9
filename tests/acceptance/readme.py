"""README.md as a user reads it: its fenced blocks, and a fresh checkout to type them in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block: its language and its text."""

    lang: str
    text: str

    def commands(self) -> list[str]:
        """The shell commands of a bash block: continuations joined, comments dropped."""
        joined = self.text.replace("\\\n", " ")
        lines = (re.sub(r"\s{2,}#.*$", "", line).strip() for line in joined.splitlines())
        return [re.sub(r"\s+", " ", line) for line in lines if line and not line.startswith("#")]


def blocks(lang: str) -> list[Block]:
    text = (REPO / "README.md").read_text()
    return [Block(m.group(1), m.group(2)) for m in FENCE.finditer(text) if m.group(1) == lang]


def block_with(command_start: str) -> Block:
    """The one bash block holding a command that starts with ``command_start``."""
    found = [b for b in blocks("bash") if any(c.startswith(command_start) for c in b.commands())]
    assert len(found) == 1, f"expected one README bash block with a command starting {command_start!r}, got {found}"
    return found[0]


def fresh_checkout(dest: Path) -> Path:
    """The tracked files of this checkout (as they are now) in ``dest/mdps-ray``, with ``../shared`` and the
    built ``.venv`` linked in (mtimes kept, so make sees the install as current)."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    root = dest / "mdps-ray"
    for name in tracked.decode().split("\0"):
        if name and (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    (root / ".venv").symlink_to(Path(sys.prefix))  # the venv this suite runs in (make test built it)
    shared = REPO.parent / "shared"
    if shared.exists():
        (dest / "shared").symlink_to(shared.resolve())
    return root


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A user's shell: the venv on PATH, an own HOME (Ray's token goes to ~/.ray), loopback-only Ray."""
    from mdps_ray.storage.weights import weights_dir

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTEST", "MDPS_FAULTS"))}
    venv_bin = Path(sys.executable).parent
    env.update({"PATH": f"{venv_bin}:{env.get('PATH', '')}", "HOME": str(home), "MDPS_WEIGHTS_DIR": str(weights_dir()),
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "MDPS_PROGRESS": "0"})
    env.update(extra)
    return env


def run_script(commands: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """The commands as one bash script (exports carry over, the first failure stops it), echoed as they run."""
    script = "set -euo pipefail\n" + "\n".join(f"echo '+ {c.replace(chr(39), '')}'\n{c}" for c in commands)
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

"""Where the tests find the tools `make install` puts in `.tools/bin` (helm, kubectl, uv)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The folders that hold the packages (pyproject's pytest pythonpath).
PACKAGE_FOLDERS = ("contract", "operator", "trainer", "demo")


def checkout_env(*first: Path) -> dict[str, str]:
    """The environment for a subprocess that runs this checkout's packages.

    pytest's `pythonpath` reaches this process only; without PYTHONPATH a
    subprocess imports the packages from the venv, which may hold another
    checkout in editable mode. `first` goes before the package folders.
    """
    env = dict(os.environ)
    paths = [*map(str, first), *(str(ROOT / folder) for folder in PACKAGE_FOLDERS)]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*paths, env.get("PYTHONPATH")) if p)
    return env


def find_tool(name: str) -> str:
    """PATH first (make puts .tools/bin there), else this checkout's or the main checkout's."""
    found = shutil.which(name)
    if found:
        return found
    local = ROOT / ".tools" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    # The main checkout's tools serve its worktrees too.
    common = Path(
        subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        or ROOT / ".git"
    )
    shared = common.parent / ".tools" / "bin" / name
    if shared.is_file():
        return str(shared)
    raise FileNotFoundError(f"{name} not on PATH nor in {local.parent}: run `make install`")

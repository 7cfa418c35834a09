"""Where the tests find the tools `make install` puts in `.tools/bin` (helm, kubectl, uv)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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

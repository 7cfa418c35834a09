"""Running `python -m marco_demo` from tests, on this checkout's code."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.tools import ROOT

# The demo imports the contract; the folders that hold the packages, this checkout's
# first: the venv may have another checkout installed in editable mode.
PACKAGE_FOLDERS = ("demo", "contract", "trainer")


def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / folder) for folder in PACKAGE_FOLDERS]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*paths, env.get("PYTHONPATH")) if p)
    return env


def run_demo(
    *args: str, timeout: float | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -m marco_demo ARGS``: its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "marco_demo", *args],
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )

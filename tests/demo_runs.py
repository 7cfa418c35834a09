"""Running `python -m marco_demo` from tests, on this checkout's code."""

from __future__ import annotations

import subprocess
import sys

from tests.tools import checkout_env


def run_demo(
    *args: str, timeout: float | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """``python -m marco_demo ARGS``: its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "marco_demo", *args],
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )

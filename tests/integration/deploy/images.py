"""The two Dockerfiles, read as the tests need them: their instructions, and the
tree their COPY lines build (no Docker engine here to build the images)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.tools import ROOT

INSTALL_SCRIPT = "scripts/install-python.sh"
DOCKERFILES = {"operator": ROOT / "Dockerfile.operator", "trainer": ROOT / "Dockerfile.trainer"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def last(path: Path, keyword: str) -> str:
    return [rest for kw, rest in instructions(path) if kw == keyword][-1]


def image_tree(dockerfile: Path, dest: Path) -> Path:
    """Copy what the Dockerfile's COPY instructions copy from the checkout into `dest`."""
    for keyword, rest in instructions(dockerfile):
        if keyword != "COPY":
            continue
        *sources, target = rest.split()
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, dest / target, ignore=IGNORED)
            elif target.endswith("/"):
                (dest / target).mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, dest / target / origin.name)
            else:
                (dest / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, dest / target)
    return dest

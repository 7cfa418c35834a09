"""uv.lock is the install: it must still satisfy pyproject.toml.

Two independent readings: uv's own check (`uv lock --check`, what `uv sync
--locked` in `make install` enforces), and a plain one that holds every
requirement of pyproject.toml against the versions uv.lock pins. Both are shown
failing on a copy of pyproject.toml with a deliberately edited range.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.tools import ROOT, find_tool

# A range the locked pydantic (2.x, >= 2.10) does not satisfy.
LOCKED_RANGE = '"pydantic>=2.7,<3"'
EDITED_RANGE = '"pydantic>=2.7,<2.10"'


def requirements(pyproject: dict) -> dict[str, list[Requirement]]:
    """Every requirement of the project, by extra ("" for the base install)."""
    project = pyproject["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {extra: [Requirement(line) for line in lines] for extra, lines in groups.items()}


def unsatisfied(pyproject: dict, lock: dict) -> list[str]:
    """Requirements that no locked version, or not every locked version, satisfies."""
    locked: dict[str, list[str]] = {}
    for package in lock["package"]:
        locked.setdefault(canonicalize_name(package["name"]), []).append(package["version"])
    problems = []
    for extra, reqs in requirements(pyproject).items():
        for req in reqs:
            versions = locked.get(canonicalize_name(req.name), [])
            bad = [v for v in versions if not req.specifier.contains(v, prereleases=True)]
            if not versions or bad:
                where = f"[{extra}]" if extra else "dependencies"
                found = ", ".join(versions) or "nothing"
                problems.append(f"{where}: {req} but uv.lock pins {found}")
    return problems


def uv_lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    # --offline: a lock that matches needs no index; one that does not fails either way.
    return subprocess.run(
        [find_tool("uv"), "lock", "--check", "--offline", "--project", str(project)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_project(dest: Path, edit: tuple[str, str] | None = None) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    if edit:
        text = (dest / "pyproject.toml").read_text()
        assert text.count(edit[0]) == 1, f"{edit[0]} not found once in pyproject.toml"
        (dest / "pyproject.toml").write_text(text.replace(*edit))
    return dest


def load(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_every_requirement_is_satisfied_by_the_lock():
    assert unsatisfied(load(ROOT / "pyproject.toml"), load(ROOT / "uv.lock")) == []


def test_an_edited_range_is_caught_by_the_plain_check(tmp_path):
    edited = copy_project(tmp_path, (LOCKED_RANGE, EDITED_RANGE))
    problems = unsatisfied(load(edited / "pyproject.toml"), load(edited / "uv.lock"))
    assert len(problems) == 1
    assert problems[0].startswith("dependencies: pydantic<2.10,>=2.7 but uv.lock pins 2.")


def test_a_dependency_missing_from_the_lock_is_caught_by_the_plain_check(tmp_path):
    edited = copy_project(tmp_path, ('"rich>=13",', '"rich>=13",\n    "left-pad-nonexistent>=1",'))
    problems = unsatisfied(load(edited / "pyproject.toml"), load(edited / "uv.lock"))
    assert problems == ["dependencies: left-pad-nonexistent>=1 but uv.lock pins nothing"]


def test_uv_finds_the_lock_up_to_date(tmp_path):
    result = uv_lock_check(copy_project(tmp_path))
    assert result.returncode == 0, result.stderr


def test_uv_refuses_the_lock_after_a_range_is_edited(tmp_path):
    result = uv_lock_check(copy_project(tmp_path, (LOCKED_RANGE, EDITED_RANGE)))
    assert result.returncode != 0
    # The lock no longer satisfies the project, so uv must resolve again: with the
    # index pages in its cache it says the lock needs updating; with a fresh cache
    # (a new machine) it cannot resolve offline at all. Either way it refuses, while
    # the unedited copy passes (test above).
    assert "needs to be updated" in result.stderr or "No solution found" in result.stderr


def test_torch_and_torchaudio_are_locked_to_the_same_release():
    # torchaudio 2.11.1 beside torch 2.11.0 fails at import: the pair must match exactly.
    lock = load(ROOT / "uv.lock")
    versions = {p["name"]: p["version"] for p in lock["package"]}
    assert versions["torchaudio"] == versions["torch"]


def test_every_python_the_project_allows_has_a_locked_torch_wheel():
    # Read the range from pyproject.toml and the wheels from uv.lock: with a Python
    # allowed that torch has no wheel for, `uv lock` cannot resolve at all and the
    # lock can only be edited by hand.
    spec = SpecifierSet(load(ROOT / "pyproject.toml")["project"]["requires-python"])
    allowed = [minor for minor in range(8, 30) if f"3.{minor}.0" in spec]
    assert allowed, spec
    assert max(allowed) < 29, f"requires-python {spec} has no upper bound"
    torch = next(p for p in load(ROOT / "uv.lock")["package"] if p["name"] == "torch")
    tags = {re.search(r"-cp(\d)(\d+)-", w["url"]).groups() for w in torch["wheels"]}
    covered = {int(minor) for major, minor in tags if major == "3"}
    assert [m for m in allowed if m not in covered] == []

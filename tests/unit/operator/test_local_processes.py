"""The identity and the stopping of `marco run`'s stage processes (local_processes.py)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from marco_operator import local_processes
from marco_operator.local_processes import ChildRecord

# A stage that starts a child which ignores SIGTERM, says "ready" once it does, and idles.
STUBBORN_CHILD = (
    "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); signal.pause()"
)
STAGE = (
    "import signal, subprocess, sys; "
    f"subprocess.Popen([sys.executable, '-c', {STUBBORN_CHILD!r}]); signal.pause()"
)


@pytest.fixture()
def stage():
    process = subprocess.Popen(
        [sys.executable, "-c", STAGE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    record = local_processes.identify("demo-train", process.pid)
    assert record is not None
    yield process, record
    local_processes.stop(record, timeout=0)
    process.wait()


def test_the_stage_and_its_children_are_found_by_their_session(stage):
    process, record = stage
    found = local_processes.members(record)
    assert len(found) == 2 and found[0].pid == process.pid
    assert {info.session for info in found} == {process.pid}


def test_a_reused_pid_or_another_boot_is_not_taken_for_the_stage(stage):
    _, record = stage
    assert local_processes.members(dataclasses.replace(record, start=record.start - 1)) == []
    assert local_processes.members(dataclasses.replace(record, boot="another boot")) == []


def test_stop_ends_the_whole_session_sigkill_for_what_ignores_sigterm(stage):
    process, record = stage
    stopped = local_processes.stop(record, timeout=0.5)
    assert len(stopped) == 2 and process.pid in stopped
    assert local_processes.members(record) == []
    assert process.wait(timeout=10) == -15  # the stage itself died of the SIGTERM
    assert local_processes.stop(record, timeout=0.5) == []  # nothing left: nothing to do


def test_records_go_through_their_file(tmp_path: Path):
    path = tmp_path / "processes.json"
    assert local_processes.load_records(path) == []
    records = [ChildRecord(job="demo-filter", pid=12, start=345, boot="b")]
    local_processes.save_records(path, records)
    assert local_processes.load_records(path) == records

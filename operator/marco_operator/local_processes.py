"""The stage processes of `marco run` (local.py) as processes the driver owns.

Each stage process starts in a session of its own (`start_new_session`), so a
Ctrl-C at the terminal reaches the driver only, and the driver stops a stage by
signalling every process of that session: the stage and whatever it started
(processes that start sessions of their own, as torchrun's workers do, are
stopped by their parent, which gets SIGTERM first).

Each stage process is recorded in the run directory (`processes.json`) under an
identity that outlives the driver: its PID, which is also its session's id, its
start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) and the
boot's id. A PID the kernel has since given to another process has another
start time, so it is never taken for the stage; and a session's id is not
reused while any process of it lives, so the stage's children are found even
after the stage itself exited. A driver that died without stopping its stages
(SIGKILL, a crash) leaves them running; the next `marco run` of that directory
finds them through these records (`LocalRun.owned`).

Linux only (`/proc`), as is everything the project installs on (uv.lock).
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from marco_contract.files import atomic_write_text

PROC = Path("/proc")
BOOT_ID = PROC / "sys" / "kernel" / "random" / "boot_id"
#: Seconds between looks while waiting for a stopped session to be gone.
POLL = 0.05
#: Seconds to wait after SIGKILL before giving up (a process in uninterruptible sleep).
KILL_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProcessInfo:
    """What `/proc/<pid>/stat` says about one process."""

    pid: int
    state: str  # R, S, D, Z (zombie: exited, not yet waited for), ...
    pgrp: int
    session: int
    start: int  # clock ticks after boot

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


@dataclass(frozen=True)
class ChildRecord:
    """A stage process as recorded in the run directory: its job and its identity."""

    job: str  # names.job_name: the job the driver started it for
    pid: int  # its PID and its session's id (it started the session)
    start: int  # its start time, in clock ticks after boot
    boot: str  # the boot it started in


class ChildrenLeft(RuntimeError):
    """Processes of a stage's session survived SIGKILL."""


def process_info(pid: int) -> ProcessInfo | None:
    """The process's `/proc/<pid>/stat`; None once it is gone (or was never there)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces and parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return ProcessInfo(
        pid=pid,
        state=fields[0],
        pgrp=int(fields[2]),
        session=int(fields[3]),
        start=int(fields[19]),
    )


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def identify(job: str, pid: int) -> ChildRecord | None:
    """The record of a process just started; None if it is already gone."""
    info = process_info(pid)
    if info is None:
        return None
    return ChildRecord(job=job, pid=pid, start=info.start, boot=boot_id())


def _processes() -> list[ProcessInfo]:
    infos = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            info = process_info(int(entry.name))
            if info is not None:
                infos.append(info)
    return infos


def members(record: ChildRecord) -> list[ProcessInfo]:
    """The live processes of the recorded stage's session: the stage and its children."""
    if record.boot != boot_id():
        return []  # the machine restarted since: nothing of it survived
    session = [info for info in _processes() if info.session == record.pid]
    leader = next((info for info in session if info.pid == record.pid), None)
    if leader is not None and leader.start != record.start:
        # The PID, and with it the session's id, has been reused: the recorded
        # session ended before (its id is not reused while one process of it lives).
        return []
    return [info for info in session if info.alive and info.start >= record.start]


def _signal(found: list[ProcessInfo], signum: int) -> None:
    # Every process group of the session: a process may have moved to a group of its
    # own, and only within its session.
    for group in sorted({info.pgrp for info in found}):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signum)


def _gone(record: ChildRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while members(record):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def stop(record: ChildRecord, timeout: float) -> list[int]:
    """Stop the recorded stage's session: SIGTERM, then SIGKILL what is left after `timeout`.

    Returns the PIDs found running (empty: nothing was left). Works whether or not
    the stage is this process's child: it waits by looking, not by `wait()` (a
    child of ours that exits stays a zombie, which counts as gone, until reaped).
    """
    found = members(record)
    if not found:
        return []
    _signal(found, signal.SIGTERM)
    if not _gone(record, timeout):
        _signal(members(record), signal.SIGKILL)
        if not _gone(record, KILL_TIMEOUT):
            left = ", ".join(str(info.pid) for info in members(record))
            raise ChildrenLeft(f"{record.job}: processes {left} survived SIGKILL")
    return [info.pid for info in found]


def save_records(path: Path, records: list[ChildRecord]) -> None:
    atomic_write_text(path, json.dumps([asdict(r) for r in records], indent=2) + "\n")


def load_records(path: Path) -> list[ChildRecord]:
    """The records in `path`; none if it is missing or unreadable (nothing to go on)."""
    try:
        entries = json.loads(path.read_text())
        return [ChildRecord(**entry) for entry in entries]
    except (OSError, ValueError, TypeError):  # written atomically: missing, in practice
        return []

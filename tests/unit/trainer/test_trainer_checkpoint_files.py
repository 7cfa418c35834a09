"""Checkpoint folders on disk: each file and the folder fsynced before the swap, the parent
after it; `last`'s previous version kept; a checkpoint that cannot be read moved aside.

A power loss itself cannot be made here: what is checked is that every file written into
the folder reaches `os.fsync` before the rename that makes it the checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from marco_trainer.train import checkpoint
from marco_trainer.train.checkpoint import (
    existing_dir,
    previous_dir,
    quarantine,
    replace_dir,
    resume_candidates,
)


def writer(step: int):
    def write(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"w" * step)
        (folder / "sub").mkdir()
        (folder / "sub" / "tokenizer.json").write_text(f"{step}")
        (folder / "step").write_text(f"{step}")

    return write


def test_every_file_and_folder_is_fsynced_before_the_swap_and_the_parent_after(
    tmp_path, monkeypatch
):
    synced: list[tuple[str, bool]] = []  # (path, whether `last` existed yet)
    real = os.fsync
    target = tmp_path / "checkpoints" / "last"

    def spy(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), target.exists()))
        real(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", spy)
    replace_dir(target, writer(3))
    fresh = tmp_path / "checkpoints" / ".last.new"
    written = {"model.safetensors", "sub", "sub/tokenizer.json", "step", "."}
    before = {str(fresh / name).removesuffix("/.") for name in written}
    assert {path for path, swapped in synced if not swapped} == before
    assert synced[-1] == (str(tmp_path / "checkpoints"), True)  # the rename, to disk
    assert {p.relative_to(target).as_posix() for p in target.rglob("*")} == written - {"."}


def test_last_keeps_its_previous_version_and_never_more(tmp_path):
    target = tmp_path / "last"
    for step in (1, 2, 3):
        replace_dir(target, writer(step), keep_previous=True)
    assert (target / "step").read_text() == "3"
    assert (previous_dir(target) / "step").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.old", "last"]
    assert resume_candidates(target) == [target, previous_dir(target)]


def test_after_a_kill_between_the_renames_the_previous_version_is_kept_until_replaced(
    tmp_path,
):
    target = tmp_path / "last"
    replace_dir(target, writer(1), keep_previous=True)
    target.rename(previous_dir(target))  # as a kill after `last` → `.last.old`
    assert existing_dir(target) == previous_dir(target)
    replace_dir(target, writer(2), keep_previous=True)
    assert (target / "step").read_text() == "2"
    assert (previous_dir(target) / "step").read_text() == "1"


def test_without_keep_previous_only_the_new_version_stays(tmp_path):
    target = tmp_path / "best"
    replace_dir(target, writer(1))
    replace_dir(target, writer(2))
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


@pytest.mark.parametrize("name", ["last", ".last.old"])
def test_a_quarantined_checkpoint_is_moved_whole_under_a_new_name(tmp_path, name):
    source = tmp_path / name
    replace_dir(source, writer(4))
    before = {p.relative_to(source): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    first = quarantine(source)
    replace_dir(source, writer(5))
    second = quarantine(source)
    assert not source.exists()
    assert first != second
    stem = name.lstrip(".")
    assert first.name.startswith(f"{stem}.corrupt-") and second.name.startswith(f"{stem}.corrupt-")
    assert {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()} == before

"""What a stage's ``--input``/``--manifest`` names, as (key, audio path) pairs.

The key identifies a file independently of where the data set is mounted: the
path relative to the scanned directory or to the manifest's folder, or the key a
line carries from an earlier stage (``SOURCE_KEY``: the filter's kept.jsonl sits in
the run directory, and a path relative to it would change with where that is).
Seeds and output names derive from it, so a moved data set augments identically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from marco_contract.formats import Utterance
from marco_contract.manifests import (
    SOURCE_KEY,
    ManifestProblems,
    Volumes,
    iter_manifest,
    manifest_files,
)
from marco_trainer.audio.io import find_audio_files, is_audio_path


@dataclass(frozen=True)
class Source:
    key: str
    path: Path
    utterance: Utterance | None = None


def iter_manifest_sources(
    path: str | Path, problems: ManifestProblems | None = None, volumes: Volumes | None = None
) -> Iterator[Source]:
    for file in manifest_files(path):
        for utterance in iter_manifest(file, problems, volumes):
            audio = Path(utterance.audio_filepath)
            carried = (utterance.model_extra or {}).get(SOURCE_KEY)
            key = carried if isinstance(carried, str) and carried else None
            yield Source(key or os.path.relpath(audio, file.parent), audio, utterance)


def iter_sources_of_manifests(
    paths: list[Path], problems: ManifestProblems | None = None, volumes: Volumes | None = None
) -> Iterator[Source]:
    """Sources of several manifests; keys get the manifest's position so they stay unique."""
    for position, path in enumerate(paths):
        for source in iter_manifest_sources(path, problems, volumes):
            if len(paths) > 1:
                source = Source(f"m{position}/{source.key}", source.path, source.utterance)
            yield source


def inside_volumes(
    folder: Path, files: list[Path], problems: ManifestProblems | None, volumes: Volumes | None
) -> list[Path]:
    """The ``files`` found under ``folder`` that resolve inside its volume; the others
    (symlinks leading out) are recorded in ``problems``, or raise without it."""
    if volumes is None:
        return files
    roots = volumes.roots_of(folder)
    kept = []
    for file in files:
        real = volumes.escapes(file, roots)
        if real is None:
            kept.append(file)
            continue
        reason = f"{file}: resolves to {real}, outside {volumes.describe(roots)}"
        if problems is None:
            raise ValueError(reason)
        problems.outside.append((None, reason))
    return kept


def gather_sources(
    path: str | Path, problems: ManifestProblems | None = None, volumes: Volumes | None = None
) -> list[Source]:
    """A directory of audio (recursive), a JSONL manifest, or a directory of manifests.

    With ``volumes``, audio resolving outside the input's volume is skipped and recorded
    in ``problems`` (`inside_volumes`, `marco_contract.manifests.iter_manifest`).
    """
    path = Path(path)
    if path.is_dir():
        audio = find_audio_files(path)
        if audio:
            kept = inside_volumes(path, audio, problems, volumes)
            return [Source(str(p.relative_to(path)), p) for p in kept]
        return list(iter_manifest_sources(path, problems, volumes))
    if not path.exists():
        raise ValueError(f"--input {path}: not found")
    if path.suffix == ".jsonl":
        return list(iter_manifest_sources(path, problems, volumes))
    if is_audio_path(path):
        if volumes is not None:
            volumes.require_inside(path, "--input")
        return [Source(path.name, path)]
    raise ValueError(f"--input {path}: neither an audio file, a .jsonl manifest nor a directory")

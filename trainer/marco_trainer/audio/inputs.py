"""What a stage's ``--input``/``--manifest`` names, as (key, audio path) pairs.

The key identifies a file independently of where the data set is mounted: the
path relative to the scanned directory or to the manifest's folder. Seeds and
output names derive from it, so a moved data set augments identically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from marco_contract.formats import Utterance
from marco_contract.manifests import ManifestProblems, iter_manifest, manifest_files
from marco_trainer.audio.io import find_audio_files, is_audio_path


@dataclass(frozen=True)
class Source:
    key: str
    path: Path
    utterance: Utterance | None = None


def iter_manifest_sources(
    path: str | Path, problems: ManifestProblems | None = None
) -> Iterator[Source]:
    for file in manifest_files(path):
        for utterance in iter_manifest(file, problems):
            audio = Path(utterance.audio_filepath)
            yield Source(os.path.relpath(audio, file.parent), audio, utterance)


def iter_sources_of_manifests(
    paths: list[Path], problems: ManifestProblems | None = None
) -> Iterator[Source]:
    """Sources of several manifests; keys get the manifest's position so they stay unique."""
    for position, path in enumerate(paths):
        for source in iter_manifest_sources(path, problems):
            if len(paths) > 1:
                source = Source(f"m{position}/{source.key}", source.path, source.utterance)
            yield source


def gather_sources(path: str | Path, problems: ManifestProblems | None = None) -> list[Source]:
    """A directory of audio (recursive), a JSONL manifest, or a directory of manifests."""
    path = Path(path)
    if path.is_dir():
        audio = find_audio_files(path)
        if audio:
            return [Source(str(p.relative_to(path)), p) for p in audio]
        return list(iter_manifest_sources(path, problems))
    if not path.exists():
        raise ValueError(f"--input {path}: not found")
    if path.suffix == ".jsonl":
        return list(iter_manifest_sources(path, problems))
    if is_audio_path(path):
        return [Source(path.name, path)]
    raise ValueError(f"--input {path}: neither an audio file, a .jsonl manifest nor a directory")

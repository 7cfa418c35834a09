"""JSONL data manifests: one utterance a line, audio paths relative to the manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from marco_contract.files import atomic_write_text
from marco_contract.formats import Utterance


@dataclass
class ManifestProblems:
    """Lines that could not be used, with the reason for each (nothing is lost silently)."""

    bad_lines: list[tuple[int, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.bad_lines)


def iter_manifest(
    path: str | Path, problems: ManifestProblems | None = None
) -> Iterator[Utterance]:
    """Yield the utterances of a JSONL manifest, audio paths resolved against its folder.

    A malformed line is skipped and recorded in ``problems`` (when given) with its
    line number; without ``problems`` it raises ``ValueError`` naming file and line.
    """
    path = Path(path)
    base = path.parent
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                utterance = Utterance.model_validate_json(line)
            except ValidationError as error:
                reason = f"{path}:{number}: {error.errors()[0]['loc']}: {error.errors()[0]['msg']}"
                if problems is None:
                    raise ValueError(reason) from error
                problems.bad_lines.append((number, reason))
                continue
            audio = Path(utterance.audio_filepath)
            if not audio.is_absolute():
                utterance.audio_filepath = str(base / audio)
            yield utterance


def read_manifest(path: str | Path) -> list[Utterance]:
    return list(iter_manifest(path))


def manifest_line(utterance: Utterance, relative_to: Path | None = None) -> str:
    data = utterance.model_dump(exclude_none=True)
    if relative_to is not None:
        audio = Path(utterance.audio_filepath)
        if audio.is_absolute():
            data["audio_filepath"] = os.path.relpath(audio, relative_to)
    return json.dumps(data, ensure_ascii=False)


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> int:
    """Write a manifest atomically with paths relative to its folder; returns the count."""
    path = Path(path)
    lines = [manifest_line(u, relative_to=path.parent.resolve()) for u in utterances]
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def manifest_files(path: str | Path) -> list[Path]:
    """A manifest argument names a ``.jsonl`` file or a directory of them (shard outputs)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise ValueError(f"{path}: directory holds no *.jsonl manifest")
        return files
    if not path.exists():
        raise ValueError(f"{path}: manifest not found")
    return [path]


def iter_manifests(
    paths: Iterable[str | Path], problems: ManifestProblems | None = None
) -> Iterator[Utterance]:
    for path in paths:
        for file in manifest_files(path):
            yield from iter_manifest(file, problems)

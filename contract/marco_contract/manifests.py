"""JSONL data manifests: one utterance a line, audio paths relative to the manifest.

Manifests are UTF-8 (JSON text is, RFC 8259 §8.1). A byte-order mark before line
1 (Windows editors write one) is not part of the line. A line with a byte that
is not UTF-8 is a bad line like any other (skipped and counted, named by file and
line); a file with such bytes and no usable line, or one whose byte-order mark
says UTF-16/32, is refused as a whole, by name.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from marco_contract.files import atomic_write_text
from marco_contract.formats import Utterance

#: Byte-order marks of encodings a manifest is not in (UTF-32 LE's starts with UTF-16 LE's,
#: so it is tested first).
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
#: Decoding with errors="surrogateescape" turns each undecodable byte into one of these.
_UNDECODED = re.compile("[\udc80-\udcff]")


@dataclass
class ManifestProblems:
    """Lines that could not be used, with the reason for each (nothing is lost silently).

    With ``drop_duplicates`` a line naming the same audio file with the same
    transcript as an earlier line (of any manifest read with this object) is
    dropped and recorded in ``duplicate_lines``: readers of training data set it,
    so a repeated line does not count twice whether or not the filter ran.
    """

    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    drop_duplicates: bool = False
    duplicate_lines: list[str] = field(default_factory=list)
    _first: dict[tuple[str, str | None], str] = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        return len(self.bad_lines)

    def is_duplicate(self, utterance: Utterance, where: str) -> bool:
        """Records ``utterance`` (at ``where``, "file:line") and says whether an earlier
        line had its audio file and transcript; always False without ``drop_duplicates``."""
        if not self.drop_duplicates:
            return False
        key = (os.path.abspath(utterance.audio_filepath), utterance.text)
        first = self._first.get(key)
        if first is None:
            self._first[key] = where
            return False
        self.duplicate_lines.append(f"{where}: same audio and text as {first}")
        return True


def _check_encoding(path: Path, head: bytes) -> None:
    for bom, name in _FOREIGN_BOMS:
        if head.startswith(bom):
            raise ValueError(
                f"{path}: a {name} file (byte-order mark); manifests are UTF-8 JSON lines"
            )


def iter_manifest(
    path: str | Path, problems: ManifestProblems | None = None
) -> Iterator[Utterance]:
    """Yield the utterances of a JSONL manifest, audio paths resolved against its folder.

    A malformed line (invalid JSON or fields, or bytes that are not UTF-8) is
    skipped and recorded in ``problems`` (when given) with its line number; without
    ``problems`` it raises ``ValueError`` naming file and line. A file with bytes that
    are not UTF-8 and no usable line is not a manifest at all: ``ValueError`` naming
    the file either way.
    """
    path = Path(path)
    base = path.parent

    def bad(number: int, reason: str, error: Exception | None = None) -> None:
        if problems is None:
            raise ValueError(reason) from error
        problems.bad_lines.append((number, reason))

    with path.open("rb") as raw:
        _check_encoding(path, raw.read(4))
        raw.seek(0)
        # utf-8-sig drops a leading byte-order mark; surrogateescape keeps a bad byte
        # to its line (found below) instead of failing the whole read where it occurs.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape")
        lines = valid = undecodable = 0
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            lines += 1
            escaped = _UNDECODED.search(line)
            if escaped is not None:
                undecodable += 1
                byte = ord(escaped.group()) - 0xDC00
                bad(
                    number,
                    f"{path}:{number}: not UTF-8 "
                    f"(byte 0x{byte:02x} at character {escaped.start() + 1})",
                )
                continue
            try:
                utterance = Utterance.model_validate_json(line)
            except ValidationError as error:
                first = error.errors()[0]
                bad(number, f"{path}:{number}: {first['loc']}: {first['msg']}", error)
                continue
            valid += 1
            audio = Path(utterance.audio_filepath)
            if not audio.is_absolute():
                utterance.audio_filepath = str(base / audio)
            if problems is not None and problems.is_duplicate(utterance, f"{path}:{number}"):
                continue
            yield utterance
        if undecodable and not valid:
            raise ValueError(
                f"{path}: not UTF-8 text ({undecodable} of its {lines} lines do not decode, "
                "none is a manifest line); manifests are UTF-8 JSON lines"
            )


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

"""JSONL data manifests: one utterance a line, audio paths relative to the manifest.

Manifests are UTF-8 (JSON text is, RFC 8259 §8.1). A byte-order mark before line
1 (Windows editors write one) is not part of the line. A line with a byte that
is not UTF-8 is a bad line like any other (skipped and counted, named by file and
line); a file with such bytes and no usable line, or one whose byte-order mark
says UTF-16/32, is refused as a whole, by name.

Confinement (`Volumes`): a stage that knows the volumes it may read (the trainer's
``--data-root``/``--output-root``, `marco_contract.options.VolumeOptions`) reads a
manifest only from inside them, and skips, counting it, every line whose audio
resolves outside the manifest's volume (symlinks followed): a manifest on the data
volume names audio on the data volume; a manifest the stages wrote under the run's
output (the filter's kept lines, the augmented copies) names audio there or on the
data volume.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
from collections import Counter
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

#: A line's identity as the stage that first read it saw it (its audio path relative to
#: the user's manifest), carried by the lines a stage writes for the next one (the
#: filter's kept.jsonl). Augmentation draws and names its copies by it, so where the run
#: directory sits does not change them (a path relative to kept.jsonl would).
SOURCE_KEY = "marco_source_key"

#: The reasons a manifest line is skipped, as stages count them.
BAD_MANIFEST_LINE = "bad_manifest_line"
OUTSIDE_VOLUME = "outside_volume"
DUPLICATE_LINE = "duplicate_line"


@dataclass
class ManifestProblems:
    """Lines that could not be used, with the reason for each (nothing is lost silently).

    ``bad_lines``: malformed lines; ``outside``: lines (or, for a scanned folder, files:
    no line number) whose audio resolves outside the manifest's volume. Each reason
    names the file and the line.

    With ``drop_duplicates`` a line naming the same audio file with the same
    transcript as an earlier line (of any manifest read with this object) is
    dropped and recorded in ``duplicates`` (``duplicate_lines``: their reasons):
    readers of training data set it, so a repeated line does not count twice whether
    or not the filter ran. A duplicate is no unusable line: ``count`` leaves it out,
    ``counts()`` and ``entries()`` (what the stages count and name) hold it.
    """

    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    outside: list[tuple[int | None, str]] = field(default_factory=list)
    drop_duplicates: bool = False
    duplicates: list[tuple[int, str]] = field(default_factory=list)
    _first: dict[tuple[str, str | None], str] = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        """Unusable lines: malformed, or naming audio outside the volume."""
        return len(self.bad_lines) + len(self.outside)

    @property
    def duplicate_lines(self) -> list[str]:
        """The reason for each dropped duplicate, naming its file:line and the first's."""
        return [reason for _, reason in self.duplicates]

    def counts(self) -> Counter[str]:
        """Skipped lines by reason (`BAD_MANIFEST_LINE`, `OUTSIDE_VOLUME`,
        `DUPLICATE_LINE`), the nonzero ones."""
        found = Counter(
            {
                BAD_MANIFEST_LINE: len(self.bad_lines),
                OUTSIDE_VOLUME: len(self.outside),
                DUPLICATE_LINE: len(self.duplicates),
            }
        )
        return Counter({reason: n for reason, n in found.items() if n})

    def entries(self) -> Iterator[tuple[str, int | None, str]]:
        """(reason, line, detail) of every skipped line, malformed lines first."""
        for line, detail in self.bad_lines:
            yield BAD_MANIFEST_LINE, line, detail
        for where, detail in self.outside:
            yield OUTSIDE_VOLUME, where, detail
        for number, detail in self.duplicates:
            yield DUPLICATE_LINE, number, detail

    def is_duplicate(self, utterance: Utterance, path: Path, number: int) -> bool:
        """Records ``utterance`` (line ``number`` of ``path``) and says whether an earlier
        line had its audio file and transcript; always False without ``drop_duplicates``."""
        if not self.drop_duplicates:
            return False
        key = (os.path.abspath(utterance.audio_filepath), utterance.text)
        where = f"{path}:{number}"
        first = self._first.get(key)
        if first is None:
            self._first[key] = where
            return False
        self.duplicates.append((number, f"{where}: same audio and text as {first}"))
        return True


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


@dataclass(frozen=True)
class Volumes:
    """Where a stage may read: the data volume and the run's output, as its process sees
    them (resolved, so that a symlink cannot lead out of either)."""

    data_root: Path
    output_root: Path | None = None

    @classmethod
    def of(cls, data_root: str | Path | None, output_root: str | Path | None) -> Volumes | None:
        """The confinement of ``--data-root``/``--output-root``; None (not confined) without
        a data root, as for a stage run by hand."""
        if data_root is None:
            return None
        return cls(_real(data_root), _real(output_root) if output_root is not None else None)

    def roots_of(self, path: str | Path) -> tuple[Path, ...]:
        """The roots a manifest (or folder) at ``path`` may name audio under; ValueError when
        ``path`` itself resolves outside the volumes."""
        real = _real(path)
        if self.output_root is not None and real.is_relative_to(self.output_root):
            return (self.data_root, self.output_root)
        if real.is_relative_to(self.data_root):
            return (self.data_root,)
        raise ValueError(f"{path}: resolves to {real}, outside {self.describe()}")

    @property
    def roots(self) -> tuple[Path, ...]:
        """Both volumes: what a path that is not a manifest's audio may lie under."""
        return (self.data_root,) if self.output_root is None else (self.data_root, self.output_root)

    def describe(self, roots: tuple[Path, ...] | None = None) -> str:
        roots = roots or self.roots
        names = [f"the data volume {roots[0]}", *(f"the run's output {r}" for r in roots[1:])]
        return " and ".join(names)

    @staticmethod
    def escapes(path: str | Path, roots: tuple[Path, ...]) -> Path | None:
        """Where ``path`` resolves when that is outside every root; None when inside one."""
        real = _real(path)
        return None if any(real.is_relative_to(root) for root in roots) else real

    def require_inside(self, path: str | Path, what: str) -> None:
        """ValueError naming ``what`` (a flag) when ``path`` resolves outside the volumes."""
        real = self.escapes(path, self.roots)
        if real is not None:
            raise ValueError(f"{what} {path}: resolves to {real}, outside {self.describe()}")


def _check_encoding(path: Path, head: bytes) -> None:
    for bom, name in _FOREIGN_BOMS:
        if head.startswith(bom):
            raise ValueError(
                f"{path}: a {name} file (byte-order mark); manifests are UTF-8 JSON lines"
            )


def iter_manifest(
    path: str | Path, problems: ManifestProblems | None = None, volumes: Volumes | None = None
) -> Iterator[Utterance]:
    """Yield the utterances of a JSONL manifest, audio paths resolved against its folder.

    A malformed line (invalid JSON or fields, or bytes that are not UTF-8), or with
    ``volumes`` a line whose audio resolves outside the manifest's volume, is skipped
    and recorded in ``problems`` (when given) with its line number; without
    ``problems`` it raises ``ValueError`` naming file and line. A line repeating an
    earlier one is dropped when ``problems.drop_duplicates`` (after the volume check:
    a line leading out counts as outside, never as the first of its audio). A file with
    bytes that are not UTF-8 and no usable line is not a manifest at all: ``ValueError``
    naming the file either way. With ``volumes``, a manifest that itself resolves outside
    them is a ValueError.
    """
    path = Path(path)
    base = path.parent
    roots = volumes.roots_of(path) if volumes is not None else ()

    def bad(number: int, reason: str, error: Exception | None = None) -> None:
        if problems is None:
            raise ValueError(reason) from error
        problems.bad_lines.append((number, reason))

    # Opening a FIFO blocks until a writer comes (forever, in a stage); a device never ends.
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file; manifests are UTF-8 JSON lines")
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
            written = utterance.audio_filepath
            audio = Path(written)
            if not audio.is_absolute():
                utterance.audio_filepath = str(base / audio)
            if volumes is not None:
                real = volumes.escapes(utterance.audio_filepath, roots)
                if real is not None:
                    reason = (
                        f"{path}:{number}: audio_filepath {written!r} resolves to {real}, "
                        f"outside {volumes.describe(roots)}"
                    )
                    if problems is None:
                        raise ValueError(reason)
                    problems.outside.append((number, reason))
                    continue
            if problems is not None and problems.is_duplicate(utterance, path, number):
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
    paths: Iterable[str | Path],
    problems: ManifestProblems | None = None,
    volumes: Volumes | None = None,
) -> Iterator[Utterance]:
    for path in paths:
        for file in manifest_files(path):
            yield from iter_manifest(file, problems, volumes)

"""Training and evaluation data: examples from manifests, length-bucketed batches.

Batches are drawn from a deterministic stream of micro-batches (seeded, per
epoch), identical on every rank and for every world size: a global step takes
the next ``world_size × accumulation`` micro-batches and rank r trains on its
``accumulation`` consecutive ones. So one process with twice the accumulation
sees exactly what two processes see together, and a resumed run continues at
the saved stream position.

With a clean-source share (`CleanMix`), an epoch's utterances are drawn from two
pools, the augmented copies and the clean source: each place in the epoch is a
clean utterance with that probability, so about that share of every batch is
clean whatever the pools' sizes (plain concatenation gives the clean source
the share of its size instead). Each pool is walked in a shuffled order,
reshuffled when it runs out; the draws depend on the seed and the epoch only,
so the stream stays deterministic and resumable.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from marco_contract.manifests import OUTSIDE_VOLUME, ManifestProblems, Volumes, iter_manifests
from marco_trainer.model_audio import AudioError, audio_duration, load_audio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    audio_filepath: str
    text: str
    duration: float
    language: str | None = None


def load_examples(
    manifests: Iterable[str | Path],
    counts: Counter | None = None,
    limit: int | None = None,
    skipped: list[str] | None = None,
    volumes: Volumes | None = None,
) -> list[Example]:
    """Labelled utterances of the manifests, in manifest order (first ``limit`` usable ones).

    Bad manifest lines, lines repeating an earlier one's audio file and text,
    utterances without text and files whose header cannot be read are skipped and
    counted in ``counts`` (``bad_lines``, ``duplicate_lines``, ``unlabeled``,
    ``corrupt_audio``); with ``volumes``, so are lines whose audio resolves outside
    the manifest's volume (``outside_volume``, each logged with its file and line).
    Duplicates are dropped here, not only by the filter stage, so that a repeated line
    does not weigh twice when the filter is off. ``skipped`` (when given) gets one
    reason for each of them, naming the line or the file.
    """
    counts = counts if counts is not None else Counter()
    reasons = skipped if skipped is not None else []
    problems = ManifestProblems(drop_duplicates=True)
    examples: list[Example] = []
    for utterance in iter_manifests(manifests, problems, volumes):
        if limit is not None and len(examples) >= limit:
            break
        text = utterance.text or ""
        if not text.strip():
            counts["unlabeled"] += 1
            reasons.append(f"{utterance.audio_filepath}: no transcript")
            continue
        duration = utterance.duration
        if duration is None:
            try:
                duration = audio_duration(utterance.audio_filepath)
            except AudioError as error:
                counts["corrupt_audio"] += 1
                reasons.append(str(error))
                continue
        examples.append(
            Example(utterance.audio_filepath, text, float(duration), utterance.language)
        )
    counts["bad_lines"] += len(problems.bad_lines)
    counts[OUTSIDE_VOLUME] += len(problems.outside)
    counts["duplicate_lines"] += len(problems.duplicates)
    for _, reason in problems.outside:
        log.warning("skipped: %s", reason)
    reasons.extend(detail for _, _, detail in problems.entries())
    return examples


@dataclass(frozen=True)
class CleanMix:
    """Examples ``first_clean`` onwards are the clean source, drawn at ``share`` of an epoch."""

    first_clean: int
    share: float

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValueError(f"clean source share {self.share}: not in [0, 1]")


def mixed_order(count: int, mix: CleanMix, rng: random.Random) -> list[int]:
    """``count`` example indices: each clean with probability ``mix.share``, else augmented.

    Each pool is drawn without replacement in a shuffled order and reshuffled when
    exhausted, so a pool smaller than its share of the epoch repeats evenly.
    """
    pools = [list(range(mix.first_clean)), list(range(mix.first_clean, count))]
    for pool in pools:
        rng.shuffle(pool)
    cursors = [0, 0]
    order: list[int] = []
    for _ in range(count):
        which = 1 if rng.random() < mix.share else 0
        pool = pools[which]
        if not pool:
            kind = "clean source" if which else "augmented"
            raise ValueError(f"clean source share {mix.share}: no {kind} utterances to draw")
        if cursors[which] == len(pool):
            rng.shuffle(pool)
            cursors[which] = 0
        order.append(pool[cursors[which]])
        cursors[which] += 1
    return order


def bucketed_batches(
    durations: Sequence[float],
    batch_size: int,
    seed: int,
    epoch: int,
    buckets_per_chunk: int = 32,
    mix: CleanMix | None = None,
) -> list[list[int]]:
    """One epoch of micro-batches: shuffled (or drawn by ``mix``), then sorted by length
    inside chunks.

    Utterances of similar length share a batch (little padding for the text and,
    for models with variable-length input, the audio) while the order of
    batches stays random. A chunk is drawn before it is sorted, so sorting moves
    utterances between a chunk's batches but keeps the chunk's clean share.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    if mix is None:
        order = list(range(len(durations)))
        rng.shuffle(order)
    else:
        order = mixed_order(len(durations), mix, rng)
    chunk = batch_size * buckets_per_chunk
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: durations[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


@dataclass
class StreamPosition:
    epoch: int = 0
    offset: int = 0


class MicroBatchStream:
    """An endless, resumable stream of micro-batches over epochs."""

    def __init__(
        self,
        durations: Sequence[float],
        batch_size: int,
        seed: int,
        mix: CleanMix | None = None,
    ) -> None:
        if not durations:
            raise ValueError("no usable training utterances")
        self.durations = list(durations)
        self.batch_size = batch_size
        self.seed = seed
        self.mix = mix
        self.position = StreamPosition()
        self._epoch_batches: list[list[int]] | None = None

    def _batches(self) -> list[list[int]]:
        if self._epoch_batches is None:
            self._epoch_batches = bucketed_batches(
                self.durations, self.batch_size, self.seed, self.position.epoch, mix=self.mix
            )
        return self._epoch_batches

    def take(self, count: int) -> list[list[int]]:
        out: list[list[int]] = []
        while len(out) < count:
            batches = self._batches()
            if self.position.offset >= len(batches):
                self.position = StreamPosition(self.position.epoch + 1, 0)
                self._epoch_batches = None
                continue
            out.append(batches[self.position.offset])
            self.position.offset += 1
        return out

    def seek(self, position: StreamPosition) -> None:
        self.position = StreamPosition(position.epoch, position.offset)
        self._epoch_batches = None


@dataclass
class LoadedBatch:
    """Audio and text of one micro-batch, with the files that could not be read."""

    audios: list[np.ndarray]
    texts: list[str]
    skipped: list[str]
    #: Example index of each audio (the readable ones, in order).
    indices: list[int]


def load_batch(
    examples: Sequence[Example], indices: Sequence[int], sample_rate: int
) -> LoadedBatch:
    audios: list[np.ndarray] = []
    texts: list[str] = []
    skipped: list[str] = []
    kept: list[int] = []
    for index in indices:
        example = examples[index]
        try:
            audios.append(load_audio(example.audio_filepath, sample_rate))
        except AudioError as error:
            skipped.append(str(error))
            continue
        texts.append(example.text)
        kept.append(index)
    return LoadedBatch(audios, texts, skipped, kept)

"""Competing talkers for the noise step: a bank of several source speakers at once.

Why: on the meeting benchmark (distant talkers behind the one transcribed), training on
the target's true channel beat every augmented system in insertions only (15.8-18.9 %
of the reference words against 23.8-29.7 %): a model that never heard speech behind
speech transcribes the background. The profile cannot harvest that background: its
voice-activity detector calls babble speech and keeps only the pauses (9 s from 150
meeting files). So the bank is made from the source training set itself, which every
adaptation has: ``talkers`` of its speakers summed, each at unit power and looped to the
clip's length. The chain mixes it as its noise at the SNR drawn from the profile, in
place of the harvested noise (`augmentation.babbleTalkers`).

Pure core (``pick_talkers``, ``mix_talkers``); ``babble_bank`` reads the audio.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

from marco_trainer.audio.inputs import Source
from marco_trainer.audio.io import AudioRejected, load_mono
from marco_trainer.audio.ops import resample

#: Clips in the bank, and their length: the noise step draws one clip and a random
#: offset per copy, so eight 12 s clips give 96 s of distinct mixtures.
BABBLE_CLIPS = 8
BABBLE_SECONDS = 12.0
#: The manifest key that names an utterance's talker (NeMo and HF manifests carry one).
SPEAKER_KEY = "speaker"
#: Peak of a clip. The noise step rescales it to the drawn SNR, so the level itself does
#: not matter; 0.5 is what the benchmark's bank of 975b7ff wrote, whose rows stand for it.
PEAK = 0.5

T = TypeVar("T")


def pick_talkers(
    by_speaker: Mapping[str, Sequence[T]], clips: int, talkers: int, rng: random.Random
) -> list[list[T]]:
    """For each of ``clips`` clips, one utterance of each of ``talkers`` distinct speakers."""
    if len(by_speaker) < talkers:
        raise ValueError(f"{len(by_speaker)} source speakers, babbleTalkers needs {talkers}")
    names = sorted(by_speaker)
    return [
        [rng.choice(by_speaker[name]) for name in rng.sample(names, talkers)] for _ in range(clips)
    ]


def mix_talkers(voices: Sequence[np.ndarray], length: int) -> np.ndarray:
    """The voices looped to ``length`` samples, each at unit power, summed; peak ``PEAK``.
    Equal power, so that no talker stands out as the one to transcribe."""
    mixture = np.zeros(length)
    for voice in voices:
        looped = np.resize(np.asarray(voice, dtype=np.float64), length)
        power = float(np.mean(looped**2))
        if power > 0:
            mixture += looped / np.sqrt(power)
    peak = float(np.max(np.abs(mixture))) if length else 0.0
    return (mixture * (PEAK / peak) if peak > 0 else mixture).astype(np.float32)


def speaker_of(source: Source) -> str:
    """The line's speaker; a line without one is a talker of its own (its key)."""
    extra = source.utterance.model_extra if source.utterance is not None else None
    speaker = (extra or {}).get(SPEAKER_KEY)
    return str(speaker) if speaker not in (None, "") else f"file:{source.key}"


def babble_bank(
    sources: Sequence[Source],
    rate: int,
    talkers: int,
    seed: int,
    clips: int = BABBLE_CLIPS,
    seconds: float = BABBLE_SECONDS,
) -> list[np.ndarray]:
    """``clips`` clips of ``talkers`` source speakers at once, at ``rate``. The same
    sources and seed give the same bank, so every shard mixes the same clips. A source
    file that cannot be read is left out of its clip and named on stderr."""
    by_speaker: dict[str, list[Source]] = {}
    for source in sources:
        by_speaker.setdefault(speaker_of(source), []).append(source)
    length = int(seconds * rate)
    bank = []
    for picks in pick_talkers(by_speaker, clips, talkers, random.Random(seed)):
        voices = []
        for source in picks:
            try:
                audio, info = load_mono(source.path)
            except AudioRejected as error:
                print(f"babble: skipped {source.key}: {error}", file=sys.stderr)
                continue
            voices.append(resample(audio, info.sample_rate, rate)[0])
        bank.append(mix_talkers(voices, length))
    return bank

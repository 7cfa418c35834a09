"""A bank of babble made from the source set itself: several source talkers at once.

On meeting, training on the target's true channel (the ceiling, `ft-oracle`) beats every
other system only in insertions (15.8–18.9 % of the reference words against 23.8–29.7 %):
the test audio carries distant talkers, and a model that never heard speech behind speech
transcribes it. The profile's harvested noise holds 9 s of the target's pauses (the VAD
keeps the frames that do not look like speech, so not the babble). This bank is what a
user would hand `augmentation.noisePath` to put competing talkers in the copies; it is
built from the source split only (its talkers and sentences), never from the target or
from the generator's own babble clips.

    python benchmarks/babble.py DATA [--clips 8] [--talkers 3] [--seconds 12] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

#: Where the bank goes, relative to the scenario's data folder (the data volume).
SOURCE_BABBLE_DIR = "noise/source-babble"
RATE = 16_000


def build(
    data: Path, clips: int = 8, talkers: int = 3, seconds: float = 12.0, seed: int = 0
) -> Path:
    """Write ``clips`` files under ``data / SOURCE_BABBLE_DIR``, each the sum of
    ``talkers`` source utterances of different speakers, each at unit power and looped to
    ``seconds``; returns the folder. The same arguments give the same files."""
    lines = [json.loads(line) for line in (data / "source/train.jsonl").read_text().splitlines()]
    by_speaker: dict[str, list[dict]] = {}
    for line in lines:
        by_speaker.setdefault(str(line.get("speaker", "")), []).append(line)
    if len(by_speaker) < talkers:
        raise ValueError(f"{data}/source/train.jsonl: {len(by_speaker)} speakers, need {talkers}")
    rng = random.Random(seed)
    out = data / SOURCE_BABBLE_DIR
    out.mkdir(parents=True, exist_ok=True)
    length = int(seconds * RATE)
    for k in range(clips):
        mixture = np.zeros(length)
        for speaker in rng.sample(sorted(by_speaker), talkers):
            line = rng.choice(by_speaker[speaker])
            audio, rate = sf.read(data / "source" / line["audio_filepath"], dtype="float64")
            if rate != RATE:
                raise ValueError(f"{line['audio_filepath']}: {rate} Hz, the bank is {RATE} Hz")
            audio = np.resize(audio, length)  # looped
            mixture += audio / (np.sqrt(np.mean(audio**2)) + 1e-12)
        sf.write(out / f"babble-{k:02d}.wav", (mixture / np.max(np.abs(mixture)) * 0.5), RATE)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="a scenario's data folder (marco_demo scenario)")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--talkers", type=int, default=3)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(build(args.data, args.clips, args.talkers, args.seconds, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

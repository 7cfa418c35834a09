"""Benchmark scenarios: target domains the method was not tuned on, made on the machine.

``python -m marco_demo scenario --name NAME --output-dir DIR`` writes, like
``python -m marco_demo data`` but for one of the scenarios below::

    DIR/source/train.jsonl      + source/train/*.wav       clean, 16 kHz, labeled
    DIR/target/unlabeled.jsonl  + target/unlabeled/*.wav   the scenario's channel, no text
    DIR/target/dev.jsonl        + target/dev/*.wav         the scenario's channel, labeled
    DIR/target/test.jsonl       + target/test/*.wav        the scenario's channel, labeled
    DIR/noise/babble/*.wav      (meeting only) the distant talkers' clips
    DIR/source/oracle.jsonl     (``--oracle`` only) the source once more, through the
                                target's own channel: see below
    DIR/summary.json            counts, hours, speakers per split

Scenarios (sounds in :mod:`marco_demo.scenario_channels`, words in
:mod:`marco_demo.scenario_text`):

==========  ===================================================  ======================
name        target channel                                       target words
==========  ===================================================  ======================
meeting     far talker, reverberant room, distant babble         project meetings
car         engine and road rumble, cabin boom, hands-free mic   voice commands, routes
voip        MP3 at 12–16 kbit/s, bursty packet loss              remote-work calls
radio       walkie-talkie: 300–2600 Hz, hiss, clipping, squelch  dispatch radio
clinic      dictation recorder: close mic, ward noise and        ward notes
            monitor beeps, AGC, IMA ADPCM at 11.025 kHz
==========  ===================================================  ======================

**``clinic`` is held out.** The benchmark (``benchmarks/adaptation.py``) reports
it apart from the tuning scenarios, and whoever changes the method (augmentation
chain, profile matching, schedule) must not look at its numbers, listen to it or
tune anything on it while doing so: it measures how the method does on a domain
nobody adjusted it for. Look at it once a change is final, and never change the
change because of what it shows. Its channel and vocabulary are deliberately
unlike the others' (a codec the profile has no detector for, automatic gain,
tonal noise, medical words).

``radio`` was the held-out scenario until 6 December. Once clinic was there to
take its place, radio was looked at (its target is clipped, which nothing in the
chain measured or made) and the method changed because of it, so it is a tuning
scenario now, and its earlier rows are the "before" of that change.

Every scenario's source side is the demo's everyday talk, the generic clean
corpus a user fine-tunes from. Speakers (TTS voices: an engine, a voice and a
pitch shift) are disjoint between source, unlabeled, dev and test within a
scenario, between scenarios, and from the demo's voices (which are never pitch
shifted); sentences are disjoint between splits. Target dev hears four talkers and
target test six, in equal shares, so that a scenario's test WER is not one voice's.
As in :mod:`marco_demo.data`, everything is planned from the seed first and
rendering resumes by skipping files that exist (their names carry a hash of their
job).

``--oracle`` adds ``source/oracle``: every source utterance (same sentence,
same voice) through a channel drawn from the target's own distribution, as the
generator makes the target. It is the augmentation a perfect profile would
produce, so training on it measures the most any augmentation can give at a
budget: a ceiling for the benchmark, never an input of the method (the product
cannot know the generator). Its channels come from a generator of their own, so
every other split is the same with or without it.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from marco_contract.files import atomic_write_text
from marco_contract.formats import Utterance
from marco_contract.manifests import write_manifest
from marco_demo.data import SplitSummary
from marco_demo.parallel import in_parallel
from marco_demo.scenario_channels import (
    SCENARIO_RATE,
    CarChannel,
    Channel,
    ClinicChannel,
    MeetingChannel,
    RadioChannel,
    VoipChannel,
    apply_channel,
    output_rate,
)
from marco_demo.scenario_text import scenario_sentences
from marco_demo.sentences import source_sentences
from marco_demo.synth import Voice, speak

BABBLE_SPLIT = "noise/babble"
#: Splits in the order they are planned; every one but the babble bank has a manifest.
SPLITS: tuple[str, ...] = ("source/train", "target/unlabeled", "target/dev", "target/test")
#: The source through the target's channel (``ScenarioConfig.oracle``): a benchmark's ceiling.
ORACLE_SPLIT = "source/oracle"


@dataclass(frozen=True)
class Speaker:
    """A synthetic talker: a TTS voice, optionally pitch shifted (sox ``pitch``, cents)."""

    engine: str
    name: str
    pitch_cents: int = 0

    @property
    def label(self) -> str:
        shift = f"{self.pitch_cents:+d}c" if self.pitch_cents else ""
        return f"{self.engine}-{self.name}{shift}"

    @classmethod
    def parse(cls, text: str) -> Speaker:
        """``engine:voice[:cents]``, e.g. ``flite:slt:+300`` or ``espeak-ng:en-us+Annie``."""
        engine, name, *cents = text.split(":")
        return cls(engine, name, int(cents[0]) if cents else 0)


def _speakers(*texts: str) -> tuple[Speaker, ...]:
    return tuple(Speaker.parse(t) for t in texts)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    held_out: bool
    speakers: dict[str, tuple[Speaker, ...]]
    draw: Callable[[random.Random, list[str]], Channel]


def _meeting(rng: random.Random, babble: list[str]) -> Channel:
    return MeetingChannel(
        rt60_s=rng.choice((0.5, 0.7, 0.9, 1.1)),
        room_m=rng.choice(((6.0, 5.0, 3.0), (8.0, 6.0, 3.0), (10.0, 7.0, 3.2))),
        distance_m=rng.choice((1.5, 2.5, 4.0)),
        babble_snr_db=rng.choice((8.0, 12.0, 16.0)),
        babble=rng.sample(babble, k=min(3, len(babble))),
        seed=rng.getrandbits(31),
    )


def _car(rng: random.Random, _: list[str]) -> Channel:
    return CarChannel(
        rpm=rng.choice((1500.0, 2200.0, 3000.0)),
        engine_share=rng.choice((0.3, 0.5, 0.7)),
        snr_db=rng.choice((0.0, 4.0, 8.0)),
        resonance_hz=rng.choice((60.0, 90.0, 120.0)),
        boom_db=rng.choice((4.0, 8.0)),
        seed=rng.getrandbits(31),
    )


def _voip(rng: random.Random, _: list[str]) -> Channel:
    return VoipChannel(
        bitrate_kbps=rng.choice((12, 16)),
        loss=rng.choice((0.03, 0.06, 0.1)),
        burst=rng.choice((0.3, 0.5)),
        seed=rng.getrandbits(31),
    )


def _radio(rng: random.Random, _: list[str]) -> Channel:
    return RadioChannel(
        low_hz=300.0,
        high_hz=rng.choice((2400.0, 2600.0)),
        snr_db=rng.choice((8.0, 12.0, 18.0)),
        drive_db=rng.choice((8.0, 12.0, 16.0)),
        tail_s=rng.choice((0.15, 0.25, 0.35)),
        seed=rng.getrandbits(31),
    )


def _clinic(rng: random.Random, _: list[str]) -> Channel:
    return ClinicChannel(
        snr_db=rng.choice((10.0, 15.0, 20.0)),
        beep_hz=rng.choice((880.0, 960.0, 1000.0)),
        beep_share=rng.choice((0.2, 0.4)),
        proximity_db=rng.choice((6.0, 10.0)),
        agc_max_gain_db=rng.choice((12.0, 18.0)),
        seed=rng.getrandbits(31),
    )


# Hand-assigned so that no speaker appears twice anywhere (tests check it): flite
# voices with a pitch shift no other entry uses, and espeak-ng accent+variant pairs.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "meeting",
            "far-field meeting room: reverberation and distant babble",
            held_out=False,
            speakers={
                "source/train": _speakers(
                    "flite:slt:+300",
                    "flite:rms:-200",
                    "espeak-ng:en-gb-x-rp+Andy",
                    "espeak-ng:en-us+Annie",
                ),
                "target/unlabeled": _speakers(
                    "flite:awb:+200", "espeak-ng:en-gb-scotland+Belinda", "espeak-ng:en-029+Caleb"
                ),
                "target/dev": _speakers(
                    "flite:kal16:+250",
                    "flite:awb:-50",
                    "espeak-ng:en-us-nyc+Linda",
                    "espeak-ng:en-gb-x-gbcwmd+m1",
                ),
                "target/test": _speakers(
                    "flite:slt:-250",
                    "flite:kal16:-50",
                    "flite:awb:+400",
                    "espeak-ng:en-gb+Mike",
                    "espeak-ng:en-029+m2",
                    "espeak-ng:en-gb-x-rp+f3",
                ),
                BABBLE_SPLIT: _speakers(
                    "espeak-ng:en-us+Gene",
                    "espeak-ng:en-gb+female2",
                    "espeak-ng:en-gb-x-gbclan+Hugo",
                ),
            },
            draw=_meeting,
        ),
        Scenario(
            "car",
            "car cabin: engine and road noise, cabin boom, hands-free microphone",
            held_out=False,
            speakers={
                "source/train": _speakers(
                    "flite:awb:-250",
                    "flite:kal16:-300",
                    "espeak-ng:en-us+Paul",
                    "espeak-ng:en-gb+Steph",
                ),
                "target/unlabeled": _speakers(
                    "flite:rms:+300", "espeak-ng:en-gb-x-gbcwmd+Max", "espeak-ng:en-us-nyc+f1"
                ),
                "target/dev": _speakers(
                    "flite:slt:+150",
                    "flite:rms:-50",
                    "espeak-ng:en-029+Alicia",
                    "espeak-ng:en-us-nyc+m4",
                ),
                "target/test": _speakers(
                    "flite:awb:+350",
                    "flite:slt:-50",
                    "flite:rms:+400",
                    "espeak-ng:en-gb-scotland+Rob",
                    "espeak-ng:en-gb-x-rp+m5",
                    "espeak-ng:en-us+m6",
                ),
            },
            draw=_car,
        ),
        Scenario(
            "voip",
            "VoIP: low-bitrate MP3 and bursty packet loss",
            held_out=False,
            speakers={
                "source/train": _speakers(
                    "flite:slt:-150",
                    "flite:kal16:+150",
                    "espeak-ng:en-gb-x-gbclan+Zac",
                    "espeak-ng:en-us+female3",
                ),
                "target/unlabeled": _speakers(
                    "flite:awb:-150", "espeak-ng:en-gb+Denis", "espeak-ng:en-029+f2"
                ),
                "target/dev": _speakers(
                    "flite:rms:+150",
                    "flite:awb:+50",
                    "espeak-ng:en-gb-x-rp+Steph2",
                    "espeak-ng:en-gb-scotland+m7",
                ),
                "target/test": _speakers(
                    "flite:kal16:-200",
                    "flite:rms:-300",
                    "flite:slt:+50",
                    "espeak-ng:en-us-nyc+Lee",
                    "espeak-ng:en-gb+f5",
                    "espeak-ng:en-029+m8",
                ),
            },
            draw=_voip,
        ),
        Scenario(
            "radio",
            "walkie-talkie: narrow band, hiss, clipping, squelch tail (held out until 6 Dec)",
            held_out=False,
            speakers={
                "source/train": _speakers(
                    "flite:rms:-100",
                    "flite:slt:+100",
                    "espeak-ng:en-gb-x-gbcwmd+Ed",
                    "espeak-ng:en-us+female4",
                ),
                "target/unlabeled": _speakers(
                    "flite:kal16:-100",
                    "espeak-ng:en-gb-scotland+Jacky",
                    "espeak-ng:en-gb-x-rp+anika",
                ),
                "target/dev": _speakers(
                    "flite:awb:-350",
                    "flite:kal16:+50",
                    "espeak-ng:en-us+Quincy",
                    "espeak-ng:en-gb-x-gbclan+f4",
                ),
                "target/test": _speakers(
                    "flite:rms:+250",
                    "flite:kal16:+400",
                    "flite:slt:-400",
                    "espeak-ng:en-029+m3",
                    "espeak-ng:en-us-nyc+edward",
                    "espeak-ng:en-gb-scotland+john",
                ),
            },
            draw=_radio,
        ),
        Scenario(
            "clinic",
            "HELD OUT. dictation recorder on a ward: close mic, beeps, AGC, IMA ADPCM 11 kHz",
            held_out=True,
            speakers={
                "source/train": _speakers(
                    "flite:awb:+100",
                    "flite:kal16:+350",
                    "espeak-ng:en-gb+Alex",
                    "espeak-ng:en-us+shelby",
                ),
                "target/unlabeled": _speakers(
                    "flite:slt:+200",
                    "espeak-ng:en-029+Andrea",
                    "espeak-ng:en-gb-x-gbcwmd+adam",
                ),
                "target/dev": _speakers(
                    "flite:rms:+50",
                    "flite:awb:-300",
                    "espeak-ng:en-us-nyc+david",
                    "espeak-ng:en-gb-x-rp+travis",
                ),
                "target/test": _speakers(
                    "flite:kal16:-150",
                    "flite:slt:-350",
                    "flite:rms:-400",
                    "espeak-ng:en-gb-scotland+robert",
                    "espeak-ng:en-gb-x-gbclan+aunty",
                    "espeak-ng:en-us+Michael",
                ),
            },
            draw=_clinic,
        ),
    )
}
TUNING_SCENARIOS: tuple[str, ...] = tuple(n for n, s in SCENARIOS.items() if not s.held_out)
HELD_OUT_SCENARIOS: tuple[str, ...] = tuple(n for n, s in SCENARIOS.items() if s.held_out)


class ScenarioConfig(BaseModel):
    name: str = Field(description="One of the scenarios above.")
    seed: int = Field(default=0, ge=0)
    source_utterances: int = Field(default=400, ge=1, description="Clean labeled training set.")
    target_utterances: int = Field(default=150, ge=1, description="Unlabeled target audio.")
    target_dev_utterances: int = Field(default=100, ge=1)
    target_test_utterances: int = Field(default=100, ge=1)
    babble_clips: int = Field(default=8, ge=1, description="Babble bank (meeting only).")
    oracle: bool = Field(
        default=False,
        description="Also render the source through the target's own channel (source/oracle).",
    )

    def sizes(self) -> dict[str, int]:
        sizes = {
            "source/train": self.source_utterances,
            "target/unlabeled": self.target_utterances,
            "target/dev": self.target_dev_utterances,
            "target/test": self.target_test_utterances,
        }
        if BABBLE_SPLIT in scenario(self.name).speakers:
            sizes[BABBLE_SPLIT] = self.babble_clips
        return sizes


def scenario(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ValueError(f"--name: unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


@dataclass(frozen=True)
class Job:
    """One utterance to render; ``path`` is relative to the output directory."""

    split: str
    text: str
    speaker: Speaker
    path: str
    channel: Channel | None = None

    @property
    def labeled(self) -> bool:
        return self.split != "target/unlabeled"


def _job_path(split: str, index: int, text: str, speaker: Speaker, channel: Channel | None) -> str:
    identity = f"{text}|{speaker.label}|{channel.model_dump_json() if channel else ''}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return f"{split}/{split.rsplit('/', 1)[1]}-{index:05d}-{digest}.wav"


def plan(config: ScenarioConfig) -> list[Job]:
    """Every utterance of every split, drawn from the seed (pure: same input, same jobs).

    The babble bank comes first: meeting channels name the clips they mix.
    """
    spec = scenario(config.name)
    sizes = config.sizes()
    rng = random.Random(f"{config.name}/{config.seed}")
    source = iter(source_sentences(sizes["source/train"], rng.getrandbits(32)))
    target_total = sum(sizes[s] for s in SPLITS if s.startswith("target/"))
    target = iter(scenario_sentences(config.name, target_total, rng.getrandbits(32)))
    # Babble talks about everyday things; it is never transcribed, only heard.
    babble_text = iter(source_sentences(sizes.get(BABBLE_SPLIT, 0) + 50, rng.getrandbits(32)))
    jobs: list[Job] = []
    babble_paths: list[str] = []
    for split in (BABBLE_SPLIT, *SPLITS):
        if split not in sizes:
            continue
        # One pool per domain, sliced in turn: no sentence is in two splits.
        texts = {"source": source, "target": target, "noise": babble_text}[split.split("/")[0]]
        speakers = spec.speakers[split]
        for index in range(sizes[split]):
            text = next(texts)
            if split == BABBLE_SPLIT:
                # A babble clip is three sentences run together: long enough to loop rarely.
                text = " ".join([text, next(texts), next(texts)])
            speaker = speakers[index % len(speakers)]
            channel = spec.draw(rng, babble_paths) if split.startswith("target/") else None
            path = _job_path(split, index, text, speaker, channel)
            jobs.append(Job(split, text, speaker, path, channel))
            if split == BABBLE_SPLIT:
                babble_paths.append(path)
    if config.oracle:
        # Its own generator: drawing from `rng` here would leave the other splits as they
        # are (they are planned already) but tie these channels to the split sizes.
        oracle_rng = random.Random(f"{config.name}/{config.seed}/oracle")
        sources = [job for job in jobs if job.split == "source/train"]
        for index, job in enumerate(sources):
            channel = spec.draw(oracle_rng, babble_paths)
            path = _job_path(ORACLE_SPLIT, index, job.text, job.speaker, channel)
            jobs.append(Job(ORACLE_SPLIT, job.text, job.speaker, path, channel))
    return jobs


@dataclass(frozen=True)
class Rendered:
    job: Job
    duration: float | None = None
    existed: bool = False
    error: str | None = None


def render(job: Job, root: Path) -> Rendered:
    """Synthesise one job and pass it through its channel; skip a file that exists."""
    import soundfile as sf

    target = root / job.path
    try:
        if target.exists():
            return Rendered(job, sf.info(target).duration, existed=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".render-") as tmp:
            shift = ("pitch", str(job.speaker.pitch_cents)) if job.speaker.pitch_cents else ()
            voice = Voice(job.speaker.engine, job.speaker.name)
            clean = speak(job.text, Path(tmp) / "clean.wav", voice, SCENARIO_RATE, shift)
            if job.channel is None:
                clean.replace(target)
            else:
                apply_channel(clean, target, job.channel, root)
        return Rendered(job, sf.info(target).duration)
    except (RuntimeError, OSError, ValueError) as error:
        return Rendered(job, error=f"{job.path}: {error}")


class ScenarioSummary(BaseModel):
    scenario: str
    description: str
    held_out: bool
    config: ScenarioConfig
    splits: dict[str, SplitSummary]


def _utterance(result: Rendered, root: Path, name: str) -> Utterance:
    job = result.job
    extra: dict[str, object] = {"speaker": job.speaker.label, "scenario": name}
    if job.channel is not None and job.labeled:
        # Dev/test carry their channel for breakdowns; unlabeled audio does not: the
        # profile has to be measured from the sound, not read off the manifest.
        extra["channel"] = job.channel.model_dump(exclude={"babble"})
    return Utterance(
        audio_filepath=str(root / job.path),
        text=job.text if job.labeled else None,
        duration=round(result.duration or 0.0, 3),
        language="en",
        **extra,  # Utterance keeps extra fields
    )


def _summarise(split: str, results: list[Rendered], manifest: str) -> SplitSummary:
    done = [r for r in results if r.error is None]
    channel = done[0].job.channel if done else None
    return SplitSummary(
        manifest=manifest,
        utterances=len(done),
        hours=round(sum(r.duration or 0.0 for r in done) / 3600, 4),
        sample_rate=output_rate(channel) if channel is not None else SCENARIO_RATE,
        labeled=split != "target/unlabeled",
        speakers=sorted({r.job.speaker.label for r in done}),
        rendered=sum(1 for r in done if not r.existed),
        reused=sum(1 for r in done if r.existed),
        failed=[r.error for r in results if r.error is not None],
    )


def build(config: ScenarioConfig, output_dir: str | Path, workers: int = 2) -> ScenarioSummary:
    spec = scenario(config.name)
    root = Path(output_dir).resolve()
    jobs = plan(config)
    results: list[Rendered] = []
    # The babble bank first: the meeting channel reads it.
    for phase in (
        [j for j in jobs if j.split == BABBLE_SPLIT],
        [j for j in jobs if j.split != BABBLE_SPLIT],
    ):
        if phase:
            label = f"scenario {config.name}"
            results += in_parallel(partial(render, root=root), phase, workers, label)
    order = {job.path: index for index, job in enumerate(jobs)}
    results.sort(key=lambda r: order[r.job.path])
    splits: dict[str, SplitSummary] = {}
    for split in (*SPLITS, *((ORACLE_SPLIT,) if config.oracle else ())):
        mine = [r for r in results if r.job.split == split]
        manifest = f"{split}.jsonl"
        utterances = [_utterance(r, root, config.name) for r in mine if r.error is None]
        write_manifest(root / manifest, utterances)
        splits[split] = _summarise(split, mine, manifest)
    babble = [r for r in results if r.job.split == BABBLE_SPLIT]
    if babble:
        splits[BABBLE_SPLIT] = _summarise(BABBLE_SPLIT, babble, "")
    summary = ScenarioSummary(
        scenario=spec.name,
        description=spec.description,
        held_out=spec.held_out,
        config=config,
        splits=splits,
    )
    atomic_write_text(root / "summary.json", summary.model_dump_json(indent=2) + "\n")
    return summary


def _run(args: argparse.Namespace) -> int:
    try:
        config = ScenarioConfig(
            name=args.name,
            seed=args.seed,
            source_utterances=args.source_utterances,
            target_utterances=args.target_utterances,
            target_dev_utterances=args.target_dev_utterances,
            target_test_utterances=args.target_test_utterances,
            babble_clips=args.babble_clips,
            oracle=args.oracle,
        )
        scenario(config.name)
    except ValidationError as error:
        first = error.errors()[0]
        print(f"scenario: --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}",
              file=sys.stderr)  # fmt: skip
        return 2
    except ValueError as error:
        print(f"scenario: {error}", file=sys.stderr)
        return 2
    summary = build(config, args.output_dir, workers=args.workers)
    failed = 0
    for key, split in summary.splits.items():
        failed += len(split.failed)
        print(
            f"{key:18s} {split.utterances:5d} utterances {split.hours * 60:6.1f} min "
            f"{split.sample_rate} Hz  {len(split.speakers)} speakers"
            + (f"  {len(split.failed)} FAILED" if split.failed else "")
        )
        for reason in split.failed:
            print(f"failed: {reason}", file=sys.stderr)
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = ScenarioConfig(name="meeting")
    parser = subparsers.add_parser(
        "scenario",
        help="synthesise one benchmark scenario (clean source, target unlabeled/dev/test)",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--name", required=True, help=f"one of: {', '.join(SCENARIOS)} "
                        f"({', '.join(HELD_OUT_SCENARIOS)} is held out)")  # fmt: skip
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--source-utterances", type=int, default=defaults.source_utterances)
    parser.add_argument("--target-utterances", type=int, default=defaults.target_utterances,
                        help="unlabeled target utterances (for the profile)")  # fmt: skip
    parser.add_argument("--target-dev-utterances", type=int,
                        default=defaults.target_dev_utterances)  # fmt: skip
    parser.add_argument("--target-test-utterances", type=int,
                        default=defaults.target_test_utterances)  # fmt: skip
    parser.add_argument("--babble-clips", type=int, default=defaults.babble_clips)
    parser.add_argument("--oracle", action="store_true",
                        help="also the source through the target's own channel "
                        "(source/oracle.jsonl): a benchmark's ceiling")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.set_defaults(func=_run)

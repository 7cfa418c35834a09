"""Demo data made on the machine: clean everyday speech (source) and phone calls (target).

``python -m marco_demo data --output-dir DIR`` writes::

    DIR/source/train.jsonl        + source/train/*.wav        clean, 16 kHz, labeled
    DIR/source/validation.jsonl   + source/validation/*.wav   clean, 16 kHz, labeled
    DIR/target/unlabeled.jsonl    + target/unlabeled/*.wav    phone line, 8 kHz, no text
    DIR/target/dev.jsonl          + target/dev/*.wav          phone line, 8 kHz, labeled
    DIR/target/test.jsonl         + target/test/*.wav         phone line, 8 kHz, labeled
    DIR/summary.json              counts, hours, speakers per split

Sentences come from :mod:`marco_demo.sentences`, voices from the Debian TTS
engines, the phone line from :mod:`marco_demo.phone_line`. Everything (texts,
voice per utterance, codec, SNR, noise) is drawn up front from the seed by
:func:`plan`; rendering is then a pure function of each job, so a killed run
resumes by skipping files that exist (file names carry a hash of their job, so
a different seed or size never reuses a stale file).

Default sizes are chosen for the demo: fine-tuning Whisper tiny.en on a CPU in
about a quarter of an hour. 400 source utterances (~20 minutes of speech) are
a few epochs in that time; 150 unlabeled target utterances are plenty to
measure a profile (band, level, noise, codec); 100 + 100 labeled target
utterances make a dev WER that moves by whole points rather than noise, and a
held-out test.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from marco_contract.files import atomic_write_text
from marco_contract.formats import Utterance
from marco_contract.manifests import write_manifest
from marco_demo.parallel import in_parallel
from marco_demo.phone_line import TELEPHONE_RATE, ChannelParams, Codec, telephony_channel
from marco_demo.sentences import source_sentences, target_sentences
from marco_demo.synth import Voice, available_voices, speak

SOURCE_RATE = 16000
#: Speech-to-noise ratios of the phone line: noisy to fair. Lower than this and
#: Whisper tiny.en hears almost nothing, which leaves a fine-tune nothing to close.
SNR_LEVELS_DB: tuple[float, ...] = (12.0, 18.0, 24.0)
#: GSM full rate is the common mobile codec; G.711 μ-law the landline one.
CODECS: tuple[Codec, ...] = ("gsm", "gsm", "mulaw")


class DemoDataConfig(BaseModel):
    seed: int = Field(default=0, ge=0)
    source_utterances: int = Field(default=400, ge=1, description="Clean labeled training set.")
    source_validation_utterances: int = Field(default=50, ge=1)
    target_utterances: int = Field(default=150, ge=1, description="Unlabeled phone calls.")
    target_dev_utterances: int = Field(default=100, ge=1)
    target_test_utterances: int = Field(default=100, ge=1)


@dataclass(frozen=True)
class Split:
    domain: str  # "source" or "target"
    name: str
    labeled: bool

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.name}"

    @property
    def sample_rate(self) -> int:
        return SOURCE_RATE if self.domain == "source" else TELEPHONE_RATE


SPLITS = (
    Split("source", "train", True),
    Split("source", "validation", True),
    Split("target", "unlabeled", False),
    Split("target", "dev", True),
    Split("target", "test", True),
)


@dataclass(frozen=True)
class Job:
    """One utterance to render; ``path`` is relative to the output directory."""

    split: str
    text: str
    voice: Voice
    path: str
    channel: ChannelParams | None = None
    labeled: bool = True

    @property
    def speaker(self) -> str:
        return f"{self.voice.engine}-{self.voice.name}"


def _sizes(config: DemoDataConfig) -> dict[str, int]:
    return {
        "source/train": config.source_utterances,
        "source/validation": config.source_validation_utterances,
        "target/unlabeled": config.target_utterances,
        "target/dev": config.target_dev_utterances,
        "target/test": config.target_test_utterances,
    }


def _job_path(
    split: Split, index: int, text: str, voice: Voice, channel: ChannelParams | None
) -> str:
    identity = f"{text}|{voice.engine}|{voice.name}|{channel.model_dump_json() if channel else ''}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return f"{split.domain}/{split.name}/{split.name}-{index:05d}-{digest}.wav"


def plan(config: DemoDataConfig, voices: list[Voice]) -> list[Job]:
    """Every utterance of every split, drawn from the seed (pure: same input, same jobs)."""
    if not voices:
        raise ValueError("no TTS voice available (install flite, espeak-ng or festival)")
    sizes = _sizes(config)
    rng = random.Random(config.seed)
    # One pool per domain, then sliced, so no sentence appears in two splits of a domain.
    source_total = sizes["source/train"] + sizes["source/validation"]
    source_pool = source_sentences(source_total, rng.getrandbits(32))
    target_total = sizes["target/unlabeled"] + sizes["target/dev"] + sizes["target/test"]
    target_pool = target_sentences(target_total, rng.getrandbits(32))
    pools = {"source": iter(source_pool), "target": iter(target_pool)}
    jobs: list[Job] = []
    for split in SPLITS:
        # Voices round-robin from a per-split shuffle: balanced speakers, all of them in
        # every split once there are as many utterances as voices.
        order = list(voices)
        rng.shuffle(order)
        for index in range(sizes[split.key]):
            text = next(pools[split.domain])
            voice = order[index % len(order)]
            channel = None
            if split.domain == "target":
                channel = ChannelParams(
                    codec=rng.choice(CODECS),
                    snr_db=rng.choice(SNR_LEVELS_DB),
                    seed=rng.getrandbits(31),
                )
            path = _job_path(split, index, text, voice, channel)
            jobs.append(Job(split.key, text, voice, path, channel, split.labeled))
    return jobs


@dataclass(frozen=True)
class Rendered:
    job: Job
    duration: float | None = None
    existed: bool = False
    error: str | None = None


def render(job: Job, root: Path) -> Rendered:
    """Synthesise one job (and pass it through its phone line); skip a file that exists."""
    import soundfile as sf

    target = root / job.path
    try:
        if target.exists():
            return Rendered(job, sf.info(target).duration, existed=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".render-") as tmp:
            clean = speak(job.text, Path(tmp) / "clean.wav", job.voice, sample_rate=SOURCE_RATE)
            if job.channel is None:
                clean.replace(target)
            else:
                telephony_channel(clean, target, job.channel)
        return Rendered(job, sf.info(target).duration)
    except (RuntimeError, OSError, ValueError) as error:
        return Rendered(job, error=f"{job.path}: {error}")


class SplitSummary(BaseModel):
    manifest: str
    utterances: int
    hours: float
    sample_rate: int
    labeled: bool
    speakers: list[str]
    rendered: int = Field(description="Files synthesised by this run.")
    reused: int = Field(description="Files found from an earlier run and kept.")
    failed: list[str] = Field(default_factory=list, description="Jobs that failed, with reasons.")


class DemoDataSummary(BaseModel):
    config: DemoDataConfig
    voices: list[str]
    splits: dict[str, SplitSummary]


def summarise(split: Split, results: list[Rendered], manifest: str) -> SplitSummary:
    done = [r for r in results if r.error is None]
    return SplitSummary(
        manifest=manifest,
        utterances=len(done),
        hours=round(sum(r.duration or 0.0 for r in done) / 3600, 4),
        sample_rate=split.sample_rate,
        labeled=split.labeled,
        speakers=sorted({r.job.speaker for r in done}),
        rendered=sum(1 for r in done if not r.existed),
        reused=sum(1 for r in done if r.existed),
        failed=[r.error for r in results if r.error is not None],
    )


def _utterance(result: Rendered, root: Path) -> Utterance:
    job = result.job
    extra: dict = {"speaker": job.speaker}
    if job.channel is not None and job.labeled:
        # Dev/test carry their channel, to break WER down by codec and SNR. Unlabeled
        # audio does not: the profile has to be measured from the sound, not read off.
        extra |= {"codec": job.channel.codec, "snr_db": job.channel.snr_db}
    return Utterance(
        audio_filepath=str(root / job.path),
        text=job.text if job.labeled else None,
        duration=round(result.duration or 0.0, 3),
        language="en",
        **extra,
    )


def build(config: DemoDataConfig, output_dir: str | Path, workers: int = 2) -> DemoDataSummary:
    root = Path(output_dir).resolve()
    voices = available_voices()
    jobs = plan(config, voices)
    by_path = {job.path: index for index, job in enumerate(jobs)}
    rendered = in_parallel(partial(render, root=root), jobs, workers, "demo data")
    results = sorted(rendered, key=lambda r: by_path[r.job.path])
    splits: dict[str, SplitSummary] = {}
    for split in SPLITS:
        mine = [r for r in results if r.job.split == split.key]
        manifest = f"{split.domain}/{split.name}.jsonl"
        write_manifest(root / manifest, [_utterance(r, root) for r in mine if r.error is None])
        splits[split.key] = summarise(split, mine, manifest)
    summary = DemoDataSummary(
        config=config, voices=[f"{v.engine}-{v.name}" for v in voices], splits=splits
    )
    atomic_write_text(root / "summary.json", summary.model_dump_json(indent=2) + "\n")
    return summary


def _run(args: argparse.Namespace) -> int:
    try:
        config = DemoDataConfig(
            seed=args.seed,
            source_utterances=args.source_utterances,
            source_validation_utterances=args.source_validation_utterances,
            target_utterances=args.target_utterances,
            target_dev_utterances=args.target_dev_utterances,
            target_test_utterances=args.target_test_utterances,
        )
    except ValidationError as error:
        first = error.errors()[0]
        print(f"data: --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}",
              file=sys.stderr)  # fmt: skip
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
    for split in summary.splits.values():
        for reason in split.failed:
            print(f"failed: {reason}", file=sys.stderr)
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = DemoDataConfig()
    parser = subparsers.add_parser(
        "data",
        help="synthesise the demo's source (clean) and target (phone call) data sets",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--source-utterances", type=int, default=defaults.source_utterances,
                        help="clean labeled training utterances")  # fmt: skip
    parser.add_argument("--source-validation-utterances", type=int,
                        default=defaults.source_validation_utterances)  # fmt: skip
    parser.add_argument("--target-utterances", type=int, default=defaults.target_utterances,
                        help="unlabeled phone-call utterances (for the profile)")  # fmt: skip
    parser.add_argument("--target-dev-utterances", type=int,
                        default=defaults.target_dev_utterances)  # fmt: skip
    parser.add_argument("--target-test-utterances", type=int,
                        default=defaults.target_test_utterances)  # fmt: skip
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.set_defaults(func=_run)

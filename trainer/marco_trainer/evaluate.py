"""WER of a model on a manifest: batched transcription, normalised scoring.

The core (:func:`transcribe_examples`, :func:`score`) is shared with the
trainer's periodic validation; :func:`run_evaluate` is the ``evaluate`` stage
(and the baseline). All of them decode under one `DecodingOptions` policy.
See :mod:`marco_trainer.text` for the normalisation.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from marco_contract.memory import ModelDims, model_dims
from marco_trainer.text import corpus_rates, is_character_language, score_pair

if TYPE_CHECKING:
    from marco_contract.options import DecodingOptions
    from marco_trainer.models.base import AsrModel

log = logging.getLogger(__name__)

NORMALISATION_NOTE = (
    "English: whisper_normalizer EnglishTextNormalizer; other languages: BasicTextNormalizer; "
    "languages without word spaces (zh, ja, th, ...) scored per character"
)


class UtteranceResult(BaseModel):
    audio_filepath: str
    reference: str
    hypothesis: str
    normalized_reference: str
    normalized_hypothesis: str
    word_errors: int = Field(ge=0)
    reference_words: int = Field(ge=0)


class EvaluationReport(BaseModel):
    """``report.json`` of the evaluate stage."""

    model: str
    manifest: list[str]
    family: str
    language: str | None
    wer: float = Field(ge=0, description="Percent.")
    cer: float = Field(ge=0, description="Percent.")
    normalisation: str = NORMALISATION_NOTE
    decoding: dict[str, Any] = Field(
        default_factory=dict, description="The decoding policy the hypotheses were made under."
    )
    counts: dict[str, int] = Field(default_factory=dict)
    skipped: list[str] = Field(default_factory=list, description="Unusable files and why.")
    utterances: list[UtteranceResult] = Field(default_factory=list)


def transcribe_examples(
    asr: AsrModel,
    examples: Sequence,
    indices: Sequence[int],
    batch_size: int,
    decoding: DecodingOptions | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> tuple[dict[int, str], dict[int, str]]:
    """Transcribe ``examples[i]`` for i in ``indices``; returns (hypotheses, skipped reasons).

    Batches hold clips of similar duration, so that a batch generated to its longest
    clip's length bound wastes few steps on the others."""
    from marco_trainer.model_audio import AudioError, load_audio

    ordered = sorted(indices, key=lambda i: examples[i].duration)
    hypotheses: dict[int, str] = {}
    skipped: dict[int, str] = {}
    for start in range(0, len(ordered), batch_size):
        batch_indices: list[int] = []
        audios = []
        for index in ordered[start : start + batch_size]:
            try:
                audios.append(load_audio(examples[index].audio_filepath, asr.sampling_rate))
            except AudioError as error:
                skipped[index] = str(error)
                continue
            batch_indices.append(index)
        if audios:
            texts = asr.transcribe(audios, decoding)
            hypotheses.update(zip(batch_indices, texts, strict=True))
        if on_batch is not None:
            on_batch(len(ordered[start : start + batch_size]))
    return hypotheses, skipped


def score(
    examples: Sequence, hypotheses: dict[int, str], language: str | None
) -> tuple[float, float, list[UtteranceResult]]:
    """Corpus (WER, CER) in percent and per-utterance results, in manifest order."""
    scored = []
    results = []
    for index in sorted(hypotheses):
        example = examples[index]
        lang = example.language or language
        item = score_pair(example.text, hypotheses[index], lang)
        scored.append(item)
        results.append(
            UtteranceResult(
                audio_filepath=example.audio_filepath,
                reference=example.text,
                hypothesis=hypotheses[index],
                normalized_reference=item.reference,
                normalized_hypothesis=item.hypothesis,
                word_errors=item.words.errors,
                reference_words=item.words.reference_tokens,
            )
        )
    wer, cer = corpus_rates(scored)
    return wer, cer, results


def export_if_missing(model: str, checkpoint: str | None) -> bool:
    """Export `checkpoint` into the folder `model` when that holds no model yet; True if it
    did. A train stage whose stop the operator enforced (its Job deleted) never reached its
    own export: its best checkpoint is still on the volume, and is what gets evaluated."""
    if checkpoint is None or (Path(model) / "config.json").exists():
        return False
    if not Path(checkpoint).is_dir():
        raise SystemExit(
            f"marco-trainer evaluate: --model {model} holds no model (no config.json) and "
            f"--export-checkpoint {checkpoint} does not exist: the train stage left neither"
        )
    from marco_trainer.export import export_checkpoint

    try:
        export_checkpoint(checkpoint, model)
    except ValueError as error:
        raise SystemExit(f"marco-trainer evaluate: --export-checkpoint: {error}") from error
    print(f"exported {checkpoint} to {model} (the train stage did not)")
    return True


def reported_dims(asr: AsrModel) -> ModelDims | None:
    """The dimensions of the model's config.json, for the operator's memory estimate;
    None (and a log line) for a kind of model it has no formula for, or one without a
    transformers config."""
    config = getattr(getattr(asr, "model", None), "config", None)
    if config is None:
        return None
    try:
        return model_dims(config.to_dict())
    except (ValueError, ValidationError) as error:
        log.warning("no memory estimate: %s", error)
        return None


def run_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from marco_contract.argv import parse_options
    from marco_contract.exit_codes import refuse
    from marco_contract.files import atomic_write_text
    from marco_contract.formats import StageResult
    from marco_contract.manifests import Volumes
    from marco_contract.options import (
        DecodingOptions,
        EvaluateOptions,
        LanguageOptions,
        VolumeOptions,
    )
    from marco_contract.results import write_stage_result
    from marco_trainer.data import load_examples
    from marco_trainer.models import load_asr_model
    from marco_trainer.runtime import pick_device, quiet_transformers

    try:  # the spec's bounds (argparse checked the types)
        for options in (EvaluateOptions, LanguageOptions):
            parse_options(options, args)
        decoding = parse_options(DecodingOptions, args)
        where = parse_options(VolumeOptions, args)
    except ValueError as error:
        # Outside the spec's bounds: every retry would be refused the same way.
        refuse(f"marco-trainer evaluate: {error}")
    quiet_transformers()
    output = Path(args.output_dir)
    counts: Counter = Counter()
    volumes = Volumes.of(where.data_root, where.output_root)
    # Everything left out, from the manifests (outside_volume lines too) and at
    # transcription: one reason each, so that the report's list, the counts and the
    # printed summary say the same number.
    skipped: list[str] = []
    try:
        examples = load_examples(
            args.manifest, counts, limit=args.max_samples, skipped=skipped, volumes=volumes
        )
    except ValueError as error:
        raise SystemExit(f"marco-trainer evaluate: {error}") from error
    if not examples:
        raise SystemExit(
            f"marco-trainer evaluate: --manifest {args.manifest}: no labelled utterances"
        )

    def transcribe(model: str, label: str) -> tuple[AsrModel, dict[int, str], dict[int, str]]:
        asr = load_asr_model(model, family=args.family, language=args.language, task=args.task)
        asr.to(pick_device())
        with tqdm(total=len(examples), desc=label, unit="utt") as bar:
            found = transcribe_examples(
                asr, examples, range(len(examples)), args.batch_size, decoding, bar.update
            )
        return asr, *found

    exported = export_if_missing(args.model, args.export_checkpoint)
    reference_wer = None
    if args.reference_model:
        # The pre-trained model on the very same utterances: the baseline the final WER
        # is compared with (WER0 itself is measured on the validation subset).
        _, reference_hypotheses, _ = transcribe(args.reference_model, "evaluate reference")
        reference_wer, _, _ = score(examples, reference_hypotheses, args.language)
        reference_wer = round(reference_wer, 4)
    asr, hypotheses, unreadable = transcribe(args.model, "evaluate")
    counts["corrupt_audio"] += len(unreadable)
    skipped += unreadable.values()
    counts["evaluated"] = len(hypotheses)
    counts["skipped"] = len(skipped)
    wer, cer, results = score(examples, hypotheses, args.language)
    counts = Counter({k: v for k, v in counts.items() if v or k in ("evaluated", "skipped")})
    report = EvaluationReport(
        model=str(args.model),
        manifest=[str(m) for m in args.manifest],
        family=asr.family,
        language=args.language,
        wer=wer,
        cer=cer,
        decoding=decoding.model_dump(by_alias=True),
        counts=dict(counts),
        skipped=skipped,
        utterances=results,
    )
    atomic_write_text(output / "report.json", report.model_dump_json(indent=2))
    write_stage_result(
        StageResult(
            stage="evaluate",
            wer=round(wer, 4),
            cer=round(cer, 4) if is_character_language(args.language) else None,
            counts=dict(counts),
            family=asr.family,
            reference_wer=reference_wer,
            model=reported_dims(asr),
            ok=bool(hypotheses),
            message=(
                "no utterance could be transcribed"
                if not hypotheses
                else f"exported {args.export_checkpoint} first: the train stage was stopped "
                "before its export"
                if exported
                else None
            ),
        ),
        output,
    )
    print(
        f"WER {wer:.2f} %  CER {cer:.2f} %  "
        f"({counts['evaluated']} utterances, {counts['skipped']} skipped)"
    )
    return 0 if hypotheses else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    from typing import get_args

    from marco_contract.argv import add_arguments
    from marco_contract.options import (
        DecodingOptions,
        EvaluateOptions,
        LanguageOptions,
        TrainerFamily,
        VolumeOptions,
    )

    parser = subparsers.add_parser(
        "evaluate",
        help="WER/CER of a model on a manifest (batched, under the decoding policy)",
        description=f"Normalisation: {NORMALISATION_NOTE}.",
    )
    parser.add_argument("--model", required=True, help="model directory or Hub id (cached)")
    parser.add_argument(
        "--manifest", required=True, action="append", help=".jsonl or a folder of them"
    )
    parser.add_argument("--output-dir", required=True)
    # --max-samples, --task, --language: the spec's options, defaults and help from the models.
    add_arguments(parser, EvaluateOptions)
    add_arguments(parser, LanguageOptions)
    add_arguments(parser, DecodingOptions)  # the spec's decoding: the same as train's
    add_arguments(parser, VolumeOptions)  # --data-root, --output-root: where it may read
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--family", choices=get_args(TrainerFamily), default="auto")
    parser.add_argument(
        "--reference-model", help="also score this model (the pre-trained one) on the same set"
    )
    parser.add_argument(
        "--export-checkpoint",
        metavar="DIR",
        default=None,
        help="when --model is a folder without a model, export this checkpoint into it first "
        "(the best checkpoint of a train stage stopped before its export)",
    )
    parser.set_defaults(func=run_evaluate)

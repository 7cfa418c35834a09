"""WER of a model on a manifest: batched transcription, normalised scoring.

The core (:func:`transcribe_examples`, :func:`score`) is shared with the
trainer's periodic validation; :func:`run_evaluate` is the ``evaluate`` stage
(and the baseline). All of them decode under one `DecodingOptions` policy.
See :mod:`marco_trainer.text` for the normalisation.

Sharded (an Indexed Job: ``--shard-index/--num-shards`` from the pod's environment),
each shard decodes utterance i of the manifest when i mod count is its index, and
leaves its edit counts; the operator merges them
(:func:`marco_contract.evaluation.merge_evaluation_results`).
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from marco_contract.evaluation import (
    NORMALISATION_NOTE,
    EvaluationReport,
    UtteranceResult,
)
from marco_contract.memory import ModelDims, model_dims
from marco_contract.scoring import EditCounts, total
from marco_trainer.text import is_character_language, score_pair

__all__ = ["NORMALISATION_NOTE", "EvaluationReport", "UtteranceResult"]

if TYPE_CHECKING:
    from marco_contract.options import DecodingOptions
    from marco_trainer.models.base import AsrModel

log = logging.getLogger(__name__)


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


def score_counts(
    examples: Sequence, hypotheses: dict[int, str], language: str | None
) -> tuple[EditCounts, EditCounts, list[UtteranceResult]]:
    """Corpus word and character edit counts, and per-utterance results in manifest order."""
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
                reference_words=item.words.reference_words,
            )
        )
    words = total(item.words for item in scored)
    return words, total(item.characters for item in scored), results


def score(
    examples: Sequence, hypotheses: dict[int, str], language: str | None
) -> tuple[float, float, list[UtteranceResult]]:
    """Corpus (WER, CER) in percent and per-utterance results, in manifest order."""
    words, chars, results = score_counts(examples, hypotheses, language)
    return words.rate, chars.rate, results


@contextmanager
def export_lock(model: Path) -> Iterator[None]:
    """Held while exporting into `model`: the shards of a sharded evaluate start together,
    and one export must not swap its folder under another's (the rest then find it done)."""
    import fcntl

    model.parent.mkdir(parents=True, exist_ok=True)
    with (model.parent / f".{model.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def export_if_missing(model: str, checkpoint: str | None) -> bool:
    """Export `checkpoint` into the folder `model` when that holds no model yet; True if it
    did. A train stage whose stop the operator enforced (its Job deleted) never reached its
    own export: its best checkpoint is still on the volume, and is what gets evaluated."""
    if checkpoint is None or (Path(model) / "config.json").exists():
        return False
    with export_lock(Path(model)):
        if (Path(model) / "config.json").exists():
            return False  # another shard exported it while this one waited
        return _export(model, checkpoint)


def _export(model: str, checkpoint: str) -> bool:
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
    from marco_contract.evaluation import REPORT_FILE, shard_file
    from marco_contract.exit_codes import refuse
    from marco_contract.files import atomic_write_text
    from marco_contract.formats import StageResult
    from marco_contract.layout import RESULT_FILE
    from marco_contract.manifests import Volumes
    from marco_contract.options import (
        DecodingOptions,
        EvaluateOptions,
        LanguageOptions,
        VolumeOptions,
    )
    from marco_contract.results import write_stage_result
    from marco_contract.scoring import percent
    from marco_trainer.data import load_examples
    from marco_trainer.models import load_asr_model
    from marco_trainer.runtime import pick_device, quiet_transformers
    from marco_trainer.sharding import shard_from_args

    try:  # the spec's bounds (argparse checked the types)
        for options in (EvaluateOptions, LanguageOptions):
            parse_options(options, args)
        decoding = parse_options(DecodingOptions, args)
        where = parse_options(VolumeOptions, args)
        shard = shard_from_args(args.shard_index, args.num_shards)
    except ValueError as error:
        # Outside the spec's bounds: every retry would be refused the same way.
        refuse(f"marco-trainer evaluate: {error}")
    sharded = shard.count > 1
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
    if shard.index != 0:
        # Every shard reads the whole manifest (the same `examples`, so the same split):
        # shard 0 alone counts and names the lines left out of it, else they add up N times.
        counts, skipped = Counter(), []
    mine = [index for index in range(len(examples)) if shard.owns(index)]
    what = f"shard {shard.index + 1}/{shard.count}: " if sharded else ""

    def transcribe(
        model: str, label: str
    ) -> tuple[AsrModel | None, dict[int, str], dict[int, str]]:
        """(the loaded model, hypotheses, unreadable) of `model` on this shard's utterances;
        no model where the shard holds no utterance."""
        if not mine:  # more shards than utterances: nothing to decode, no model to load
            return None, {}, {}
        asr = load_asr_model(model, family=args.family, language=args.language, task=args.task)
        asr.to(pick_device())
        with tqdm(total=len(mine), desc=f"{what}{label}", unit="utt") as bar:
            found = transcribe_examples(asr, examples, mine, args.batch_size, decoding, bar.update)
        return asr, *found

    exported = export_if_missing(args.model, args.export_checkpoint)
    reference_counts = None
    if args.reference_model:
        # The pre-trained model on the very same utterances: the baseline the final WER
        # is compared with (WER0 itself is measured on the validation subset).
        _, reference_hypotheses, _ = transcribe(args.reference_model, "evaluate reference")
        reference_counts, _, _ = score_counts(examples, reference_hypotheses, args.language)
    asr, hypotheses, unreadable = transcribe(args.model, "evaluate")
    found_family = asr.family if asr is not None else None
    counts["corrupt_audio"] += len(unreadable)
    skipped += unreadable.values()
    counts["evaluated"] = len(hypotheses)
    counts["skipped"] = len(skipped)
    words, chars, results = score_counts(examples, hypotheses, args.language)
    counts = Counter({k: v for k, v in counts.items() if v or k in ("evaluated", "skipped")})
    report = EvaluationReport(
        model=str(args.model),
        manifest=[str(m) for m in args.manifest],
        family=found_family or args.family,  # no model loaded: no utterance in this shard
        language=args.language,
        wer=words.rate,
        cer=chars.rate,
        decoding=decoding.model_dump(by_alias=True),
        shard_index=shard.index,
        num_shards=shard.count,
        word_counts=words,
        char_counts=chars,
        counts=dict(counts),
        skipped=skipped,
        utterances=results,
    )
    report_name = shard_file(REPORT_FILE, shard.index, shard.count)
    atomic_write_text(output / report_name, report.model_dump_json(indent=2))
    # One shard that decoded nothing is no failure of the stage: the others may have, and
    # the merge says whether any did (an unsharded run fails here, as it always has).
    ok = bool(hypotheses) or sharded
    nothing = "no utterance could be transcribed"
    result = StageResult(
        stage="evaluate",
        wer=percent(words),
        cer=percent(chars) if is_character_language(args.language) else None,
        counts=dict(counts),
        family=found_family,
        model=reported_dims(asr) if asr is not None else None,
        reference_wer=percent(reference_counts) if reference_counts is not None else None,
        ok=ok,
        message=(
            f"{what}{nothing}"
            if not hypotheses and mine
            else f"exported {args.export_checkpoint} first: the train stage was stopped "
            "before its export"
            if exported
            else None
        ),
        shard_index=shard.index if sharded else None,
        num_shards=shard.count if sharded else None,
        word_counts=words,
        char_counts=chars,
        reference_word_counts=reference_counts,
    )
    write_stage_result(result, output, name=shard_file(RESULT_FILE, shard.index, shard.count))
    if sharded:
        _write_merged_result(output, shard.count)
    print(
        f"{what}WER {words.rate:.2f} %  CER {chars.rate:.2f} %  "
        f"({counts['evaluated']} utterances, {counts['skipped']} skipped)"
    )
    return 0 if ok else 1


def _write_merged_result(output: Path, count: int) -> None:
    """`result.json` over every shard, once all have left theirs: each shard writes its own
    before it looks, so the last to look sees them all. The operator does not read it (it
    merges the pods' termination messages): it is the result for whoever reads the folder."""
    from marco_contract.evaluation import merge_evaluation_results, shard_file
    from marco_contract.files import atomic_write_text
    from marco_contract.layout import RESULT_FILE
    from marco_contract.results import parse_stage_result

    parts = []
    for index in range(count):
        path = output / shard_file(RESULT_FILE, index, count)
        part = parse_stage_result(path.read_text()) if path.exists() else None
        if part is None:
            return  # that shard has not finished: it writes the total when it does
        parts.append(part)
    merged = merge_evaluation_results(parts)
    atomic_write_text(output / RESULT_FILE, merged.model_dump_json(indent=2))


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
    from marco_trainer.sharding import add_shard_arguments

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
    add_shard_arguments(parser)  # an Indexed Job's pod: its slice of the manifest
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

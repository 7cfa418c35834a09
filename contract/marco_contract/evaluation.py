"""The baseline and evaluate stages' results: the report file and the merge of shards.

Each shard of a sharded baseline or evaluate (an Indexed Job, one completion index per
shard) decodes its slice of the manifest and leaves its edit counts, not only its rates:
in its report file (`EvaluationReport`, with every hypothesis) and in its stage result
(the termination message). The operator merges the shards' results
(:func:`merge_evaluation_results`): the corpus WER is the summed S + D + I over the summed
reference words, exactly the WER of one process decoding the whole set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from marco_contract.formats import StageResult
from marco_contract.scoring import EditCounts, percent, total

#: The report of an unsharded run, in the stage's folder.
REPORT_FILE = "report.json"
NORMALISATION_NOTE = (
    "English: whisper_normalizer EnglishTextNormalizer; other languages: BasicTextNormalizer; "
    "languages without word spaces (zh, ja, th, ...) scored per character"
)


def shard_file(name: str, index: int, count: int) -> str:
    """A shard's own file beside its siblings': `report-00001-of-00003.json` for
    `report.json`. One shard keeps the plain name: an unsharded run's files are what they
    were."""
    if count == 1:
        return name
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}-{index:05d}-of-{count:05d}{dot}{suffix}"


class UtteranceResult(BaseModel):
    audio_filepath: str
    reference: str
    hypothesis: str
    normalized_reference: str
    normalized_hypothesis: str
    word_errors: int = Field(ge=0)
    reference_words: int = Field(ge=0)


class EvaluationReport(BaseModel):
    """``report.json`` of the evaluate stage (and the baseline); a shard's covers its slice
    (``report-<index>-of-<count>.json``)."""

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
    shard_index: int = Field(default=0, ge=0)
    num_shards: int = Field(default=1, ge=1)
    word_counts: EditCounts = Field(default_factory=EditCounts, description="Behind wer.")
    char_counts: EditCounts = Field(default_factory=EditCounts, description="Behind cer.")
    counts: dict[str, int] = Field(default_factory=dict)
    skipped: list[str] = Field(default_factory=list, description="Unusable files and why.")
    utterances: list[UtteranceResult] = Field(default_factory=list)


def merge_evaluation_results(results: Sequence[StageResult]) -> StageResult:
    """The result of a whole baseline or evaluate from its shards' results, one per shard.

    Rates come from the summed counts, never from averaging the shards' rates (shards hold
    different numbers of words). ValueError names what is missing or mixed: a shard without
    a result, two runs' shards, a result without counts."""
    if not results:
        raise ValueError("no shard results to merge")
    count = results[0].num_shards or 1
    shardings = sorted({result.num_shards or 1 for result in results})
    if shardings != [count]:
        raise ValueError(f"shard results of different runs: num_shards {shardings}")
    ordered = sorted(results, key=lambda result: result.shard_index or 0)
    indexes = [result.shard_index or 0 for result in ordered]
    if indexes != list(range(count)):
        missing = sorted(set(range(count)) - set(indexes))
        raise ValueError(
            f"shard results {indexes} are not shards 0..{count - 1} once each"
            + (f" (no result from shard(s) {missing})" if missing else "")
        )
    uncounted = [index for index, r in zip(indexes, ordered, strict=True) if r.word_counts is None]
    if uncounted:
        raise ValueError(f"the result of shard(s) {uncounted} carries no word_counts")
    words = total(r.word_counts for r in ordered if r.word_counts is not None)
    chars = None
    if all(r.char_counts is not None for r in ordered):
        chars = total(r.char_counts for r in ordered if r.char_counts is not None)
    reference = None
    if all(r.reference_word_counts is not None for r in ordered):
        reference = total(
            r.reference_word_counts for r in ordered if r.reference_word_counts is not None
        )
    counts: Counter[str] = Counter()
    for result in ordered:
        counts.update(result.counts)
    # Nothing decoded in any shard: no rate at all, as one process would have failed there
    # (a shard can hold only unreadable files while the others decoded theirs).
    decoded = counts.get("evaluated", 0) > 0
    messages = list(dict.fromkeys(r.message for r in ordered if r.message))
    if not decoded:
        messages.insert(0, "no utterance could be transcribed")
    first = ordered[0]
    return StageResult(
        stage=first.stage,
        ok=decoded and all(r.ok for r in ordered),
        wer=percent(words) if decoded else None,
        # cer is stated for the languages scored per character: the shards say which.
        cer=percent(chars) if decoded and chars is not None and first.cer is not None else None,
        reference_wer=percent(reference) if reference is not None else None,
        family=first.family,
        counts=dict(counts),
        message="; ".join(messages) or None,
        num_shards=count,
        word_counts=words,
        char_counts=chars,
        reference_word_counts=reference,
        # Every shard that loaded the model reports the same dimensions (the memory
        # estimate's input); a shard without utterances loaded none.
        model=next((r.model for r in ordered if r.model is not None), None),
    )

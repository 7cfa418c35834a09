"""Specs list several training manifests: filter and augment take them all, none is dropped."""

from __future__ import annotations

import json
import shutil


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_filter_and_augment_read_every_manifest(corpus, tmp_path, marco_trainer, make_manifest):
    # Two data sets whose manifests use the same relative names for different audio.
    for name, utterances in (("a", (0, 1)), ("b", (2, 3))):
        folder = tmp_path / name
        folder.mkdir()
        lines = []
        for i in utterances:
            shutil.copy(corpus / "source" / f"utt{i}.wav", folder / f"clip{i % 2}.wav")
            lines.append({"audio_filepath": f"clip{i % 2}.wav", "text": f"sentence {i} here"})
        make_manifest(folder / "train.jsonl", lines)
    filtered = tmp_path / "filtered"
    marco_trainer("filter", "--manifest", tmp_path / "a" / "train.jsonl",
                  "--manifest", tmp_path / "b" / "train.jsonl", "--output-dir", filtered,
                  "--max-chars-per-second", 100)  # fmt: skip
    kept = _lines(filtered / "kept.jsonl")
    assert sorted(k["text"] for k in kept) == [f"sentence {i} here" for i in range(4)]

    augmented = tmp_path / "augmented"
    marco_trainer("augment", "--manifest", tmp_path / "a" / "train.jsonl",
                  "--manifest", tmp_path / "b" / "train.jsonl", "--output-dir", augmented,
                  "--preset", "telephony", "--seed", 3)  # fmt: skip
    (manifest,) = augmented.glob("manifest-*.jsonl")
    out = _lines(manifest)
    assert sorted(line["text"] for line in out) == [f"sentence {i} here" for i in range(4)]
    assert len({line["audio_filepath"] for line in out}) == 4  # same names, distinct outputs

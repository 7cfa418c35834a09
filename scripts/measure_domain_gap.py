"""Measure the domain gap the demo has to close: Whisper tiny.en on clean source vs phone target.

Usage (after `python -m marco_demo import-ct2` and `python -m marco_demo data`)::

    python scripts/measure_domain_gap.py --model DIR --data DIR [--out DIR]

Prints WER per split and, for the target, per codec, SNR and voice; writes
``domain_gap.json`` and ``domain_gap.png`` to ``--out``. Two normalisations:
"simple" (lower-case, no punctuation) and Whisper's English normaliser, which
also maps spoken numbers to digits; the targets read account numbers as words,
so only the second compares like with like.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import jiwer
import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from whisper_normalizer.english import EnglishTextNormalizer

from marco_contract.manifests import read_manifest

SIMPLE = jiwer.Compose(
    [jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()]
)
WHISPER = EnglishTextNormalizer()
SPLITS = ("source/validation", "source/train", "target/dev", "target/test")


def load_16k(path: str) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32")
    if rate != 16000:
        audio = resample_poly(audio, 16000, rate).astype(np.float32)
    return audio


def transcribe(model, processor, paths: list[str], batch: int) -> list[str]:
    texts: list[str] = []
    for start in tqdm(range(0, len(paths), batch), desc="transcribe", unit="batch"):
        audio = [load_16k(p) for p in paths[start : start + batch]]
        features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            tokens = model.generate(features, max_new_tokens=96)
        texts += processor.batch_decode(tokens, skip_special_tokens=True)
    return texts


def wer(references: list[str], hypotheses: list[str], normalise) -> float:
    refs = [normalise(r) or "<empty>" for r in references]
    hyps = [normalise(h) for h in hypotheses]
    return 100 * jiwer.wer(refs, hyps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default=".")
    parser.add_argument("--limit", type=int, default=100, help="utterances per split at most")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)

    model = WhisperForConditionalGeneration.from_pretrained(args.model).eval()
    processor = WhisperProcessor.from_pretrained(args.model)
    data, out = Path(args.data), Path(args.out)
    report: dict[str, dict] = {}
    examples: dict[str, list] = {}
    for split in SPLITS:
        utterances = read_manifest(data / f"{split}.jsonl")[: args.limit]
        refs = [u.text or "" for u in utterances]
        hyps = transcribe(model, processor, [u.audio_filepath for u in utterances], args.batch)
        entry = {
            "utterances": len(utterances),
            "wer_simple": round(wer(refs, hyps, SIMPLE), 2),
            "wer_whisper_norm": round(wer(refs, hyps, WHISPER), 2),
        }
        groups: dict[str, list[int]] = defaultdict(list)
        for index, utterance in enumerate(utterances):
            extra = utterance.model_extra or {}
            groups[f"voice={extra.get('speaker')}"].append(index)
            if "codec" in extra:
                groups[f"codec={extra['codec']}"].append(index)
                groups[f"snr_db={extra['snr_db']:g}"].append(index)
        entry["by"] = {
            name: round(wer([refs[i] for i in idx], [hyps[i] for i in idx], WHISPER), 2)
            for name, idx in sorted(groups.items())
        }
        report[split] = entry
        examples[split] = [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[:3]]
        print(f"{split:18s} n={entry['utterances']:3d}  WER simple {entry['wer_simple']:6.2f} %  "
              f"whisper-normalised {entry['wer_whisper_norm']:6.2f} %")  # fmt: skip
        for name, value in entry["by"].items():
            print(f"    {name:28s} {value:6.2f} %")

    out.mkdir(parents=True, exist_ok=True)
    (out / "domain_gap.json").write_text(
        json.dumps({"wer": report, "examples": examples}, indent=2) + "\n"
    )
    plot(report, out / "domain_gap.png")


def plot(report: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report)
    simple = [report[n]["wer_simple"] for n in names]
    normed = [report[n]["wer_whisper_norm"] for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(x - 0.2, simple, 0.4, label="lower-case, no punctuation")
    ax.bar(x + 0.2, normed, 0.4, label="Whisper English normaliser")
    ax.set_xticks(x, names)
    ax.set_ylabel("WER (%)")
    ax.set_title("Whisper tiny.en (imported): clean source vs phone-line target")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

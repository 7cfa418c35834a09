"""A small demo data run: valid manifests, right rates, several voices, domain words, seeded."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marco_contract.manifests import read_manifest
from marco_demo.data import DemoDataConfig, DemoDataSummary, plan
from marco_demo.sentences import DOMAIN_VOCABULARY, words
from marco_demo.synth import available_voices
from tests.demo_runs import run_demo

SIZES = {
    "--source-utterances": 4,
    "--source-validation-utterances": 2,
    "--target-utterances": 3,
    "--target-dev-utterances": 3,
    "--target-test-utterances": 3,
}


def demo_data(output, *extra: str) -> subprocess.CompletedProcess:
    sizes = [str(part) for pair in SIZES.items() for part in pair]
    return run_demo("data", "--output-dir", str(output), "--seed", "7", *sizes, *extra,
                    timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo")
    done = demo_data(output)
    assert done.returncode == 0, done.stderr
    return output


def test_manifests_rates_and_speakers(small_run):
    summary = DemoDataSummary.model_validate_json((small_run / "summary.json").read_text())
    expected = {"source/train": (4, 16000), "source/validation": (2, 16000),
                "target/unlabeled": (3, 8000), "target/dev": (3, 8000),
                "target/test": (3, 8000)}  # fmt: skip
    assert set(summary.splits) == set(expected)
    for key, (count, rate) in expected.items():
        split = summary.splits[key]
        utterances = read_manifest(small_run / split.manifest)
        assert len(utterances) == split.utterances == count and not split.failed
        for utterance in utterances:
            info = sf.info(utterance.audio_filepath)
            assert info.samplerate == rate and info.channels == 1
            assert abs(info.duration - utterance.duration) < 0.01 and info.duration > 1.0
            assert (utterance.text is None) == (key == "target/unlabeled")
        assert len({u.model_extra["speaker"] for u in utterances}) == count  # one voice each
        assert split.hours == pytest.approx(sum(u.duration for u in utterances) / 3600, abs=1e-3)
    # Relative paths in the files themselves, so the data set can move.
    line = json.loads((small_run / "target/dev.jsonl").read_text().splitlines()[0])
    assert line["audio_filepath"].startswith("dev/") and line["codec"] in ("gsm", "mulaw")


def test_target_speaks_the_domain_and_source_does_not(small_run):
    target = [
        u.text for key in ("dev", "test") for u in read_manifest(small_run / f"target/{key}.jsonl")
    ]
    source = [u.text for u in read_manifest(small_run / "source/train.jsonl")]
    assert all(set(words(text)) & DOMAIN_VOCABULARY for text in target), target
    assert not any(set(words(text)) & DOMAIN_VOCABULARY for text in source), source
    assert len(set(target)) == len(target)


def test_phone_line_is_band_limited(small_run):
    audio, rate = sf.read(read_manifest(small_run / "target/test.jsonl")[0].audio_filepath)
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    frequencies = np.fft.rfftfreq(audio.size, 1 / rate)
    above = spectrum[frequencies > 3600].sum() / spectrum.sum()
    assert above < 0.01


def test_text_is_reproducible_from_the_seed(small_run):
    config = DemoDataConfig(seed=7, source_utterances=4, source_validation_utterances=2,
                            target_utterances=3, target_dev_utterances=3,
                            target_test_utterances=3)  # fmt: skip
    voices = available_voices()
    jobs = plan(config, voices)
    assert jobs == plan(config, voices)
    assert [j.text for j in jobs] != [
        j.text for j in plan(config.model_copy(update={"seed": 8}), voices)
    ]
    written = [u.text for u in read_manifest(small_run / "source/train.jsonl")]
    assert written == [j.text for j in jobs if j.split == "source/train"]


def test_rerun_resumes_and_refuses_bad_sizes(small_run):
    lost = read_manifest(small_run / "target/dev.jsonl")[1].audio_filepath
    before = sf.read(lost)[0]
    Path(lost).unlink()
    done = demo_data(small_run)
    assert done.returncode == 0, done.stderr
    summary = DemoDataSummary.model_validate_json((small_run / "summary.json").read_text())
    assert summary.splits["target/dev"].rendered == 1 and summary.splits["target/dev"].reused == 2
    assert summary.splits["source/train"].rendered == 0
    assert np.array_equal(sf.read(lost)[0], before)  # same seed, same noise, same file

    bad = demo_data(small_run / "bad", "--target-dev-utterances", "0")
    assert bad.returncode == 2 and "--target-dev-utterances" in bad.stderr

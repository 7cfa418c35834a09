"""Issue 13, point 4, the trainer's side: audio a manifest names must resolve inside the
manifest's volume (symlinks followed). A line that leads out is skipped and counted with a
reason naming the manifest and the line; it never ends the stage, and nothing read from
outside reaches the outputs. Without --data-root (a stage run by hand) nothing changes.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from marco_contract.manifests import ManifestProblems, Volumes, iter_manifest
from marco_trainer.audio.assets import load_directory
from marco_trainer.audio.inputs import gather_sources
from marco_trainer.cli import main
from marco_trainer.data import load_examples

RATE = 16000


def tone(path: Path, frequency: float, seconds: float = 1.0) -> Path:
    """A readable, non-silent clip; the frequency makes each one's samples distinct."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(path, 0.3 * np.sin(2 * np.pi * frequency * t), RATE)
    return path


class Corpus:
    """A data volume with legitimate lines and three ways out of it, and a volume outside."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.outside = root / "outside"
        self.secret = tone(self.outside / "secret.wav", 880.0)
        self.a = tone(self.data / "audio" / "a.wav", 220.0)
        self.b = tone(self.data / "audio" / "b.wav", 330.0)
        self.leak = self.data / "audio" / "leak.wav"
        self.leak.symlink_to(self.secret)
        self.manifest = self.data / "train.jsonl"
        rows = [
            {"audio_filepath": "audio/a.wav", "text": "hello there"},  # relative, inside
            {"audio_filepath": str(self.b), "text": "good morning"},  # absolute, inside
            {"audio_filepath": "../outside/secret.wav", "text": "leak one"},  # '..'
            {"audio_filepath": str(self.secret), "text": "leak two"},  # absolute outside
            {"audio_filepath": "audio/leak.wav", "text": "leak three"},  # symlink out
        ]
        self.manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json}\n")
        self.real_data = Path(os.path.realpath(self.data))
        self.real_secret = Path(os.path.realpath(self.secret))

    def escape(self, line: int, written: str) -> str:
        """The reason for a line that leads to the secret, written out independently."""
        return (
            f"{self.manifest}:{line}: audio_filepath {written!r} resolves to {self.real_secret}, "
            f"outside the data volume {self.real_data}"
        )

    @property
    def escapes(self) -> list[tuple[int, str]]:
        return [
            (3, self.escape(3, "../outside/secret.wav")),
            (4, self.escape(4, str(self.secret))),
            (5, self.escape(5, "audio/leak.wav")),
        ]


@pytest.fixture  # not `corpus`: tests/conftest.py marks that fixture's users tts and sox
def on_volume(tmp_path) -> Corpus:
    return Corpus(tmp_path)


def test_lines_leading_out_of_the_volume_are_skipped_with_file_and_line(on_volume):
    problems = ManifestProblems()
    volumes = Volumes.of(on_volume.data, None)
    kept = list(iter_manifest(on_volume.manifest, problems, volumes))
    assert [u.text for u in kept] == ["hello there", "good morning"]
    assert [Path(u.audio_filepath).resolve() for u in kept] == [
        on_volume.a.resolve(),
        on_volume.b.resolve(),
    ]
    assert problems.outside == on_volume.escapes
    assert [number for number, _ in problems.bad_lines] == [6]
    assert problems.counts() == Counter(outside_volume=3, bad_manifest_line=1)


def test_without_a_record_of_problems_the_first_escape_is_an_error(on_volume):
    with pytest.raises(ValueError) as error:
        list(iter_manifest(on_volume.manifest, volumes=Volumes.of(on_volume.data, None)))
    assert str(error.value) == on_volume.escape(3, "../outside/secret.wav")


def test_without_a_data_root_nothing_is_confined(on_volume):
    """A stage run by hand on files of its choosing reads them as before."""
    problems = ManifestProblems()
    kept = list(iter_manifest(on_volume.manifest, problems))
    assert len(kept) == 5 and problems.outside == [] and problems.count == 1


def test_a_manifest_that_resolves_outside_the_volume_is_refused(on_volume):
    link = on_volume.data / "borrowed.jsonl"
    foreign = on_volume.outside / "foreign.jsonl"
    foreign.write_text(json.dumps({"audio_filepath": "secret.wav", "text": "x"}) + "\n")
    link.symlink_to(foreign)
    with pytest.raises(ValueError) as error:
        list(iter_manifest(link, ManifestProblems(), Volumes.of(on_volume.data, None)))
    assert str(error.value) == (
        f"{link}: resolves to {os.path.realpath(foreign)}, outside the data volume "
        f"{on_volume.real_data}"
    )


def test_the_runs_own_manifests_may_name_the_data_volume_and_the_output(on_volume, tmp_path):
    out = tmp_path / "out" / "marco-asr" / "run"
    augmented = tone(out / "augment" / "audio" / "x.wav", 440.0)
    manifest = out / "augment" / "manifest-00000-of-00001.jsonl"
    rows = [
        {"audio_filepath": os.path.relpath(on_volume.a, manifest.parent), "text": "original"},
        {"audio_filepath": "audio/x.wav", "text": "augmented"},
        {"audio_filepath": str(on_volume.secret), "text": "leak"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    volumes = Volumes.of(on_volume.data, out)
    problems = ManifestProblems()
    kept = list(iter_manifest(manifest, problems, volumes))
    assert [Path(u.audio_filepath).resolve() for u in kept] == [
        on_volume.a.resolve(),
        augmented.resolve(),
    ]
    assert problems.outside == [
        (
            3,
            f"{manifest}:3: audio_filepath {str(on_volume.secret)!r} resolves to "
            f"{on_volume.real_secret}, outside the data volume {on_volume.real_data} and the run's "
            f"output {os.path.realpath(out)}",
        )
    ]
    # A data manifest may not name the output: the output is no part of its volume.
    data_manifest = on_volume.data / "points-at-output.jsonl"
    data_manifest.write_text(json.dumps({"audio_filepath": str(augmented), "text": "x"}) + "\n")
    problems = ManifestProblems()
    assert list(iter_manifest(data_manifest, problems, volumes)) == []
    assert [number for number, _ in problems.outside] == [1]


def test_training_examples_count_what_left_the_volume(on_volume):
    counts: Counter = Counter()
    examples = load_examples([on_volume.manifest], counts, volumes=Volumes.of(on_volume.data, None))
    assert [e.text for e in examples] == ["hello there", "good morning"]
    assert [e.duration for e in examples] == pytest.approx([1.0, 1.0])
    assert counts == Counter(outside_volume=3, bad_lines=1)


def test_the_filter_stage_rejects_each_escape_with_its_line_and_keeps_the_rest(on_volume, tmp_path):
    out = tmp_path / "out" / "run"
    code = main(["filter", "--manifest", str(on_volume.manifest),
                 "--output-dir", str(out / "filter"),
                 "--data-root", str(on_volume.data), "--output-root", str(out)])  # fmt: skip
    assert code == 0
    kept = [json.loads(line) for line in (out / "filter" / "kept.jsonl").read_text().splitlines()]
    assert [k["text"] for k in kept] == ["hello there", "good morning"]
    lines = (out / "filter" / "rejects.jsonl").read_text().splitlines()
    rejects = [json.loads(line) for line in lines]
    outside = [r for r in rejects if r["reason"] == "outside_volume"]
    assert [(r["line"], r["detail"]) for r in outside] == on_volume.escapes
    result = json.loads((out / "filter" / "result.json").read_text())
    assert result["counts"]["rejected:outside_volume"] == 3
    assert result["counts"]["rejected:bad_manifest_line"] == 1
    assert result["counts"]["kept"] == 2 and result["counts"]["rejected"] == 4
    # The filter's own output, read back by the next stage under the same roots: all inside.
    problems = ManifestProblems()
    volumes = Volumes.of(on_volume.data, out)
    again = list(iter_manifest(out / "filter" / "kept.jsonl", problems, volumes))
    assert len(again) == 2 and problems.count == 0


def test_a_folder_of_audio_leaves_out_files_that_lead_outside(on_volume):
    problems = ManifestProblems()
    sources = gather_sources(on_volume.data / "audio", problems, Volumes.of(on_volume.data, None))
    assert sorted(s.key for s in sources) == ["a.wav", "b.wav"]
    assert problems.outside == [
        (
            None,
            f"{on_volume.leak}: resolves to {on_volume.real_secret}, outside the data volume "
            f"{on_volume.real_data}",
        )
    ]
    # An audio file named directly must lie inside too.
    with pytest.raises(ValueError, match=r"^--input .*leak\.wav: resolves to"):
        gather_sources(on_volume.leak, ManifestProblems(), Volumes.of(on_volume.data, None))


def test_noise_and_rir_folders_leave_out_files_that_lead_outside(on_volume, capsys):
    clips = load_directory(on_volume.data / "audio", RATE, Volumes.of(on_volume.data, None))
    assert len(clips) == 2  # a.wav and b.wav, not the secret behind leak.wav
    assert (
        f"skipped {on_volume.leak}: resolves to {on_volume.real_secret}" in capsys.readouterr().err
    )
    assert len(load_directory(on_volume.data / "audio", RATE)) == 3  # unconfined: as before


def test_augment_and_profile_skip_and_count_each_escape(on_volume, tmp_path):
    """Nothing from outside is augmented into the outputs or measured into the profile."""
    out = tmp_path / "out" / "run"
    roots = ["--data-root", str(on_volume.data), "--output-root", str(out)]
    code = main(["augment", "--manifest", str(on_volume.manifest), "--output-dir",
                 str(out / "augment"), "--preset", "telephony", *roots])  # fmt: skip
    assert code == 0
    result = json.loads((out / "augment" / "result.json").read_text())
    assert result["counts"]["skipped:outside_volume"] == 3
    assert result["counts"]["skipped:bad_manifest_line"] == 1
    assert (result["counts"]["sources"], result["counts"]["outputs"]) == (2, 2)
    written = [json.loads(line) for p in (out / "augment").glob("manifest-*.jsonl")
               for line in p.read_text().splitlines()]  # fmt: skip
    assert sorted(w["source_audio_filepath"] for w in written) == ["audio/a.wav", "audio/b.wav"]
    assert len(list((out / "augment").rglob("*.wav"))) == 2

    code = main(["profile", "--input", str(on_volume.manifest), "--output-dir",
                 str(out / "profile"), *roots])  # fmt: skip
    assert code == 0
    result = json.loads((out / "profile" / "result.json").read_text())
    assert result["counts"]["processed"] == 2
    assert result["counts"]["skipped:outside_volume"] == 3


def test_bad_bytes_escapes_and_duplicates_are_told_apart(on_volume):
    """One reading holds all three: a line that is not UTF-8 is bad, a line leading out
    is outside (however often it repeats: it is never the first of its audio), a repeated
    line inside is a duplicate; `counts()` and `entries()` hold each once, by reason."""
    manifest = on_volume.data / "mixed.jsonl"
    inside = json.dumps({"audio_filepath": "audio/a.wav", "text": "hello there"}).encode()
    leak = json.dumps({"audio_filepath": str(on_volume.secret), "text": "leak"}).encode()
    latin1 = '{"audio_filepath": "audio/b.wav", "text": "caf\xe9"}'.encode("latin-1")
    manifest.write_bytes(b"\xef\xbb\xbf" + b"\n".join([inside, latin1, leak, inside, leak]) + b"\n")
    problems = ManifestProblems(drop_duplicates=True)
    kept = list(iter_manifest(manifest, problems, Volumes.of(on_volume.data, None)))
    assert [u.text for u in kept] == ["hello there"]  # line 1, its byte-order mark dropped
    assert [n for n, _ in problems.bad_lines] == [2] and "not UTF-8" in problems.bad_lines[0][1]
    assert [n for n, _ in problems.outside] == [3, 5]
    assert problems.duplicate_lines == [f"{manifest}:4: same audio and text as {manifest}:1"]
    assert problems.count == 3  # unusable lines; a duplicate is none
    assert problems.counts() == Counter(bad_manifest_line=1, outside_volume=2, duplicate_line=1)
    assert [(reason, line) for reason, line, _ in problems.entries()] == [
        ("bad_manifest_line", 2),
        ("outside_volume", 3),
        ("outside_volume", 5),
        ("duplicate_line", 4),
    ]


class EchoAsr:
    """Stands in for a model: transcribes every clip as "hello there"."""

    family = "encoder-decoder"
    sampling_rate = RATE

    def to(self, device):
        return self

    def transcribe(self, audios, decoding=None):
        return ["hello there"] * len(audios)


def test_evaluate_counts_lines_leading_out_in_its_one_skipped_count(
    on_volume, tmp_path, monkeypatch, capsys
):
    """evaluate's counts[skipped], the report's skipped list and stdout hold the lines
    that led out of the volume, with the bad line and a repeated one."""
    import re

    import marco_trainer.models
    import marco_trainer.runtime
    from marco_contract.results import read_stage_result
    from marco_trainer.evaluate import EvaluationReport

    monkeypatch.setattr(marco_trainer.models, "load_asr_model", lambda *a, **k: EchoAsr())
    monkeypatch.setattr(marco_trainer.runtime, "pick_device", lambda: "cpu")
    monkeypatch.setattr(marco_trainer.runtime, "quiet_transformers", lambda: None)
    with on_volume.manifest.open("a") as handle:  # line 7: line 1 again
        handle.write(json.dumps({"audio_filepath": "audio/a.wav", "text": "hello there"}) + "\n")
    out = tmp_path / "out" / "run"
    assert main(["evaluate", "--model", "echo", "--manifest", str(on_volume.manifest),
                 "--output-dir", str(out / "evaluate"),
                 "--data-root", str(on_volume.data), "--output-root", str(out)]) == 0  # fmt: skip

    report = EvaluationReport.model_validate_json((out / "evaluate" / "report.json").read_text())
    result = read_stage_result(out / "evaluate")
    assert result is not None and result.counts == report.counts
    counts = report.counts
    assert counts["outside_volume"] == 3
    assert counts["bad_lines"] == counts["duplicate_lines"] == 1
    printed = re.search(r"\((\d+) utterances, (\d+) skipped\)", capsys.readouterr().out)
    assert printed is not None
    assert counts["skipped"] == len(report.skipped) == int(printed.group(2)) == 5
    assert counts["evaluated"] == int(printed.group(1)) == 2
    for _, reason in on_volume.escapes:
        assert reason in report.skipped


def test_sharded_augment_and_profile_count_each_escape_once(on_volume, tmp_path, capsys):
    """Every shard reads the whole manifest; shard 0 alone counts and names what led out."""
    out = tmp_path / "out" / "run"
    roots = ["--data-root", str(on_volume.data), "--output-root", str(out)]
    said = []
    for index in range(2):
        shard = ["--shard-index", str(index), "--num-shards", "2"]
        augment = ["augment", "--manifest", str(on_volume.manifest), "--output-dir",
                   str(out / "augment"), "--preset", "telephony"]  # fmt: skip
        assert main([*augment, *roots, *shard]) == 0
        profile = ["profile", "--input", str(on_volume.manifest), "--output-dir",
                   str(out / "profile")]  # fmt: skip
        assert main([*profile, *roots, *shard]) == 0
        said.append(capsys.readouterr().err)
    augmented = json.loads((out / "augment" / "result.json").read_text())["counts"]
    assert augmented["skipped:outside_volume"] == 3
    assert augmented["skipped:bad_manifest_line"] == 1
    assert augmented["skipped"] == 4 and augmented["outputs"] == 2
    profiled = json.loads((out / "profile" / "result.json").read_text())["counts"]
    assert profiled["skipped:outside_volume"] == 3 and profiled["processed"] == 2
    escape = on_volume.escapes[0][1]
    assert escape in said[0] and escape not in said[1]

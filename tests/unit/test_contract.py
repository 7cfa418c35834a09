import json
from pathlib import Path

import pytest

from marco_contract.formats import TERMINATION_MESSAGE_LIMIT, Directive, StageResult, Utterance
from marco_contract.manifests import (
    ManifestProblems,
    iter_manifest,
    iter_manifests,
    read_manifest,
    write_manifest,
)
from marco_trainer.sharding import Shard, shard_from_args


def test_manifest_round_trip_keeps_relative_paths(tmp_path):
    audio = tmp_path / "data" / "a.wav"
    audio.parent.mkdir()
    audio.write_bytes(b"")
    path = tmp_path / "data" / "train.jsonl"
    write_manifest(path, [Utterance(audio_filepath=str(audio), text="hi", duration=1.5)])
    line = json.loads(path.read_text())
    assert line == {"audio_filepath": "a.wav", "text": "hi", "duration": 1.5}
    (back,) = read_manifest(path)
    assert back.audio_filepath == str(audio)


def test_bad_manifest_line_is_named_or_counted(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "a.wav", "text": "ok"}\n{"text": "no audio"}\n')
    with pytest.raises(ValueError, match=r"m.jsonl:2"):
        read_manifest(path)
    problems = ManifestProblems()
    kept = list(iter_manifest(path, problems))
    assert len(kept) == 1 and problems.count == 1 and problems.bad_lines[0][0] == 2


def test_termination_message_stays_under_the_kubernetes_limit():
    small = StageResult(stage="evaluate", wer=12.5, counts={"skipped": 1})
    assert json.loads(small.to_termination_message())["wer"] == 12.5
    huge = StageResult(stage="profile", counts={f"reason-{i}": i for i in range(1000)})
    text = huge.to_termination_message()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert "dropped" in json.loads(text)["message"]


def test_directive_refuses_non_positive_learning_rate():
    with pytest.raises(ValueError, match="learning_rate"):
        Directive(cycle=0, learning_rate=0)


def test_shards_partition_the_items(monkeypatch):
    items = list(range(10))
    shards = [Shard(i, 3).select(items) for i in range(3)]
    assert sorted(x for shard in shards for x in shard) == items
    assert all(set(a).isdisjoint(b) for a in shards for b in shards if a is not b)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    monkeypatch.setenv("MARCO_NUM_SHARDS", "4")
    assert shard_from_args(None, None) == Shard(2, 4)
    with pytest.raises(ValueError, match="--shard-index"):
        shard_from_args(5, 4)


def test_a_line_that_is_not_utf8_is_skipped_and_named_by_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(
        b'{"audio_filepath": "a.wav", "text": "caf\xc3\xa9"}\n'
        b'{"audio_filepath": "b.wav", "text": "caf\xe9"}\n'  # Latin-1: 0xe9 is no UTF-8
        b'{"audio_filepath": "c.wav", "text": "ok"}\n'
    )
    problems = ManifestProblems()
    kept = list(iter_manifest(path, problems))
    assert [u.text for u in kept] == ["café", "ok"]
    ((number, reason),) = problems.bad_lines
    assert number == 2
    assert reason.startswith(f"{path}:2: not UTF-8") and "0xe9" in reason
    with pytest.raises(ValueError, match=r"m\.jsonl:2: not UTF-8"):
        read_manifest(path)


@pytest.mark.parametrize(
    "content",
    [
        '{"audio_filepath": "a.wav", "text": "hi"}\n'.encode("utf-16"),  # BOM + UTF-16
        b"\x89PNG\r\n\xff\xd8\xff\n\x80\x81\n",  # binary: no line decodes
    ],
    ids=["utf16", "binary"],
)
def test_a_file_that_is_not_utf8_is_refused_by_name(tmp_path, content):
    path = tmp_path / "m.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"m\.jsonl: .*UTF-"):
        list(iter_manifest(path, ManifestProblems()))


def test_a_byte_order_mark_does_not_cost_line_one(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = '{"audio_filepath": "a.wav", "text": "one"}\n{"audio_filepath": "b.wav"}\n'
    path.write_bytes(b"\xef\xbb\xbf" + lines.encode())
    problems = ManifestProblems()
    kept = list(iter_manifest(path, problems))
    assert [u.audio_filepath for u in kept] == [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]
    assert problems.count == 0


def test_training_readers_drop_a_line_repeating_audio_and_text(tmp_path):
    (tmp_path / "sub").mkdir()
    first = tmp_path / "a.jsonl"
    first.write_text(
        '{"audio_filepath": "x.wav", "text": "hello"}\n'
        '{"audio_filepath": "x.wav", "text": "hello"}\n'  # the same line again
        '{"audio_filepath": "x.wav", "text": "hello there"}\n'  # same audio, other text: kept
        '{"audio_filepath": "y.wav", "text": "hello"}\n'
    )
    second = tmp_path / "sub" / "b.jsonl"
    second.write_text('{"audio_filepath": "../x.wav", "text": "hello"}\n')  # x.wav again
    problems = ManifestProblems(drop_duplicates=True)
    kept = list(iter_manifests([first, second], problems))
    assert [(Path(u.audio_filepath).name, u.text) for u in kept] == [
        ("x.wav", "hello"),
        ("x.wav", "hello there"),
        ("y.wav", "hello"),
    ]
    assert problems.duplicate_lines == [
        f"{first}:2: same audio and text as {first}:1",
        f"{second}:1: same audio and text as {first}:1",
    ]
    assert problems.count == 0  # duplicates are not bad lines
    # A manifest named twice is read twice: its second reading is all duplicates.
    twice = ManifestProblems(drop_duplicates=True)
    assert len(list(iter_manifests([first, first], twice))) == 3
    assert len(twice.duplicate_lines) == 1 + 4
    # Readers that do not ask (the filter, with its own duplicate rules) get every line.
    assert len(list(iter_manifests([first, second], ManifestProblems()))) == 5

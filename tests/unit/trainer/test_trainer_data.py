import json
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from marco_trainer.data import (
    MicroBatchStream,
    StreamPosition,
    bucketed_batches,
    load_batch,
    load_examples,
)


def test_an_epoch_of_bucketed_batches_covers_every_utterance_once():
    durations = [float(i % 17) + 0.5 for i in range(101)]
    batches = bucketed_batches(durations, batch_size=4, seed=3, epoch=0, buckets_per_chunk=5)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(101))
    assert all(len(b) <= 4 for b in batches)
    # Inside a chunk, batches hold neighbours in length: little padding.
    spread = sum(max(durations[i] for i in b) - min(durations[i] for i in b) for b in batches)
    shuffled = [list(range(101))[i : i + 4] for i in range(0, 101, 4)]
    naive = sum(max(durations[i] for i in b) - min(durations[i] for i in b) for b in shuffled)
    assert spread < naive / 2


def test_batches_are_deterministic_per_seed_and_epoch():
    durations = [1.0 + i for i in range(20)]
    assert bucketed_batches(durations, 3, 0, 0) == bucketed_batches(durations, 3, 0, 0)
    assert bucketed_batches(durations, 3, 0, 0) != bucketed_batches(durations, 3, 0, 1)


def test_stream_crosses_epochs_and_resumes_at_its_position():
    durations = [1.0] * 10
    stream = MicroBatchStream(durations, batch_size=3, seed=1)
    first = stream.take(3)
    saved = StreamPosition(stream.position.epoch, stream.position.offset)
    rest = stream.take(4)  # 4 batches an epoch: crosses into epoch 1
    assert (stream.position.epoch, stream.position.offset) == (1, 3)
    again = MicroBatchStream(durations, batch_size=3, seed=1)
    again.seek(saved)
    assert again.take(4) == rest
    # Epoch 0 is the first four batches (3 + 3 + 3 + 1 utterances): each utterance once.
    epoch0, epoch1 = first + rest[:1], rest[1:]
    assert sorted(i for batch in epoch0 for i in batch) == list(range(10))
    assert sorted(len(batch) for batch in epoch0) == [1, 3, 3, 3]
    # Epoch 1 starts over: its first three batches repeat no utterance among themselves.
    drawn = [i for batch in epoch1 for i in batch]
    assert len(drawn) == len(set(drawn)) >= 7


def test_every_rank_draws_the_same_stream_however_many_it_takes_at_a_time():
    """Each rank builds its own stream and takes world × accumulation micro-batches a step
    (train/loop.py slices its share out of them): the ranks agree only if every instance
    yields the same sequence whatever the chunk size. That the 2-rank run then equals the
    1-rank run with twice the accumulation is checked end to end in
    tests/integration/trainer/test_trainer_torchrun.py."""
    durations = [float(i) for i in range(12)]
    whole = MicroBatchStream(durations, 2, seed=0).take(8)  # 6 batches an epoch: crosses it
    stream = MicroBatchStream(durations, 2, seed=0)
    chunked = [batch for _ in range(4) for batch in stream.take(2)]
    assert chunked == whole
    # Within an epoch the batches are disjoint: two ranks of one step train different utterances.
    assert sorted(i for batch in whole[:6] for i in batch) == list(range(12))


def test_load_examples_skips_and_counts(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, [0.0] * 1600, 16000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    rows = [
        {"audio_filepath": "good.wav", "text": "fine"},
        {"audio_filepath": "bad.wav", "text": "broken header"},
        {"audio_filepath": "good.wav"},
        {"audio_filepath": "good.wav", "text": "   "},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json}\n")
    counts = Counter()
    examples = load_examples([manifest], counts)
    assert [e.text for e in examples] == ["fine"]
    assert examples[0].duration == pytest.approx(0.1)
    assert counts == Counter(corrupt_audio=1, unlabeled=2, bad_lines=1)


def test_load_batch_skips_unreadable_files_with_the_reason(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, [0.1] * 800, 8000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"audio_filepath": "good.wav", "text": "a", "duration": 0.1})
        + "\n"
        + json.dumps({"audio_filepath": "bad.wav", "text": "b", "duration": 0.1})
        + "\n"
    )
    examples = load_examples([manifest])
    batch = load_batch(examples, [0, 1], sample_rate=16000)
    assert batch.texts == ["a"] and len(batch.audios[0]) == 1600  # resampled 8 → 16 kHz
    assert len(batch.skipped) == 1 and "bad.wav" in batch.skipped[0]


def test_a_missing_manifest_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere\.jsonl"):
        load_examples([tmp_path / "nowhere.jsonl"])


def test_load_examples_drops_a_repeated_line_and_counts_it(tmp_path):
    """With the filter off nothing else drops it: a repeated line would weigh twice."""
    sf.write(tmp_path / "a.wav", [0.1] * 1600, 16000)
    sf.write(tmp_path / "b.wav", [0.1] * 3200, 16000)
    rows = [
        {"audio_filepath": "a.wav", "text": "one"},
        {"audio_filepath": "b.wav", "text": "two"},
        {"audio_filepath": "a.wav", "text": "one"},
        {"audio_filepath": "./a.wav", "text": "one"},  # the same file by another path
        {"audio_filepath": "a.wav", "text": "uno"},  # same audio, other transcript: kept
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    counts = Counter()
    examples = load_examples([manifest], counts)
    assert [(Path(e.audio_filepath).name, e.text) for e in examples] == [
        ("a.wav", "one"),
        ("b.wav", "two"),
        ("a.wav", "uno"),
    ]
    assert counts["duplicate_lines"] == 2

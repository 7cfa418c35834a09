"""Lost packets: read from digital silence inside the audio, and made by a Gilbert channel.

Expectations are computed here from where the test put the gaps (or from the
chain's definition), not read back from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from marco_trainer.audio.assets import Assets
from marco_trainer.audio.chain import apply_chain
from marco_trainer.audio.dropouts import (
    drop_packets,
    dropout_runs,
    gilbert_burst,
    packet_seconds,
)
from marco_trainer.audio.features import FileMetrics
from marco_trainer.audio.params import DropoutStep, draw_params, utterance_rng
from marco_trainer.audio.profile import build_profile, without_measured_channel
from tests.audio_records import file_record

RATE = 16000


def hiss(seconds: float, seed: int = 0) -> np.ndarray:
    """A recording's floor: never exactly zero."""
    return (0.01 * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(
        np.float32
    )


def test_gaps_inside_the_audio_are_found_with_their_lengths_and_the_ends_are_not():
    x = hiss(3.0)
    gaps = [(0.5, 0.02), (1.0, 0.06), (2.0, 0.02)]  # (start s, length s)
    for start, length in gaps:
        x[int(start * RATE) : int((start + length) * RATE)] = 0.0
    x[: int(0.1 * RATE)] = 0.0  # leading and trailing silence: not the link's doing
    x[-int(0.1 * RATE) :] = 0.0
    runs = dropout_runs(x, RATE)
    assert runs == pytest.approx([length for _, length in gaps])
    assert packet_seconds(runs) == 0.02
    # Runs of 1, 3 and 1 packets: mean 5/3, so a loss continues with 1 - 3/5.
    assert gilbert_burst(runs, 0.02) == pytest.approx(0.4)
    assert dropout_runs(hiss(1.0), RATE) == []


def test_the_channel_loses_the_asked_share_in_runs_of_the_asked_length():
    loss, burst, packet = 0.1, 0.5, 0.02
    x = hiss(200.0)
    out, lost = drop_packets(x, RATE, packet, loss, burst, seed=4)
    size = int(packet * RATE)
    silent = np.all(out[: len(out) // size * size].reshape(-1, size) == 0, axis=1)
    assert lost == int(silent.sum())
    assert silent.mean() == pytest.approx(loss, abs=0.015)
    # Runs of a chain that continues with `burst` are geometric: mean 1 / (1 - burst).
    edges = np.diff(np.concatenate([[0], silent.astype(int), [0]]))
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert lengths.mean() == pytest.approx(1 / (1 - burst), rel=0.1)
    kept = ~silent
    assert np.array_equal(out[: len(silent) * size].reshape(-1, size)[kept],
                          x[: len(silent) * size].reshape(-1, size)[kept])  # fmt: skip


def _record(i: int, runs: list[float] | None, seconds: float = 4.0) -> FileMetrics:
    return file_record(i, sample_rate=RATE, duration_s=seconds, dropouts_s=runs)


def test_the_profile_reads_share_loss_packet_and_burst_over_the_files():
    records = [
        _record(0, [0.02, 0.02, 0.04]),
        _record(1, [0.02]),
        _record(2, []),
        _record(3, []),
        _record(4, None),  # a record from before dropouts were measured: not counted
    ]
    lossy = build_profile(records).dropouts
    assert lossy is not None
    assert (lossy.files, lossy.share) == (2, pytest.approx(2 / 4))
    assert lossy.loss == pytest.approx(((0.08 / 4.0) + (0.02 / 4.0)) / 2)
    assert lossy.packet_s == 0.02
    assert lossy.burst == pytest.approx(1 - 1 / (0.025 / 0.02))
    assert build_profile([_record(0, []), _record(1, None)]).dropouts is None
    assert without_measured_channel(build_profile(records)).dropouts is None


def test_utterances_lose_packets_as_often_as_the_target_s_files_do():
    profile = build_profile([_record(i, [0.02] if i % 4 else []) for i in range(8)])
    drawn = [draw_params(profile, utterance_rng(0, f"u{i}", 0), RATE) for i in range(400)]
    share = np.mean([p.dropouts is not None for p in drawn])
    assert abs(share - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 400)
    # Without dropouts in the profile nothing else of a draw changes.
    plain = build_profile([_record(i, []) for i in range(8)])
    before = draw_params(plain, utterance_rng(0, "u", 0), RATE)
    assert before.dropouts is None
    assert before == draw_params(plain, utterance_rng(0, "u", 0), RATE)


def test_the_chain_silences_whole_packets_last_and_logs_how_many():
    profile = build_profile([_record(i, []) for i in range(4)])
    params = draw_params(profile, utterance_rng(1, "u", 0), RATE).model_copy(
        update={"dropouts": DropoutStep(packet_s=0.02, loss=0.2, burst=0.3, seed=9)}
    )
    x = hiss(2.0, seed=3) * 20
    out, rate, applied = apply_chain(x, RATE, params, Assets(sample_rate=RATE))
    assert rate == RATE and applied.dropouts is not None
    size = int(0.02 * RATE)
    packets = out[: len(out) // size * size].reshape(-1, size)
    silent = int(np.all(packets == 0, axis=1).sum())
    assert applied.dropouts.packets_lost == silent > 0

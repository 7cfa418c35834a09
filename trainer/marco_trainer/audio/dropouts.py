"""Lost packets: stretches of digital silence inside a target's speech, and making them.

A VoIP or mobile link that loses a packet plays nothing (or a repeat of the
last one) for a packet's length, usually 20 ms. Decoded to PCM that is a run of
exact zeros with sound on both sides, which nothing else in a recording makes:
a microphone, a room, even a codec's quietest frame keep some noise. So a
*dropout* is a run of samples at most ``SILENCE`` in magnitude, at least
``MIN_RUN_SECONDS`` long, that neither starts nor ends the file.

Per file the profile keeps how many dropouts there were and how long they
lasted; over the files, the share with dropouts, the loss (dropout time over
file time, in the files that have them), the packet length (the commonest run)
and the burstiness of a two-state (Gilbert) channel with that loss
whose runs are as long, in packets, as the measured ones: a run of mean length
L packets continues with probability 1 − 1/L.

``drop_packets`` is that channel, applied to an utterance: silent packets drawn
from a seeded chain, at the measured loss and burstiness.
"""

from __future__ import annotations

import numpy as np

#: |sample| at or under this is digital silence (16-bit PCM's zero is exactly 0).
SILENCE = 1e-6
MIN_RUN_SECONDS = 0.005
#: Packet lengths a link uses (s); the measured one is the nearest to the shortest runs.
PACKET_SECONDS = (0.01, 0.02, 0.03, 0.04, 0.06)


def dropout_runs(x: np.ndarray, rate: int) -> list[float]:
    """Lengths (s) of the runs of digital silence inside ``x`` (not at its ends)."""
    silent = np.abs(np.asarray(x)) <= SILENCE
    if not silent.any():
        return []
    edges = np.diff(np.concatenate([[0], silent.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    inside = (starts > 0) & (ends < len(silent))
    lengths = (ends - starts)[inside] / rate
    return [float(v) for v in lengths if v >= MIN_RUN_SECONDS]


def packet_seconds(runs: list[float]) -> float:
    """The packet length the runs are made of: the listed length nearest their most
    common length (in whole milliseconds; a lone lost packet is the commonest run, bursts
    are its multiples, and a concealed packet can leave a shorter silent tail)."""
    values, counts = np.unique(np.round(np.asarray(runs) * 1000), return_counts=True)
    common = float(values[np.argmax(counts)]) / 1000
    return min(PACKET_SECONDS, key=lambda p: abs(p - common))


def gilbert_burst(runs: list[float], packet: float) -> float:
    """P(a loss continues): a geometric run length of mean L packets has 1 − 1/L."""
    mean_packets = max(float(np.mean(runs)) / packet, 1.0)
    return 1.0 - 1.0 / mean_packets


def drop_packets(
    x: np.ndarray, rate: int, packet_s: float, loss: float, burst: float, seed: int
) -> tuple[np.ndarray, int]:
    """``x`` with packets silenced by a stationary Gilbert chain of long-run loss ``loss``
    and continuation ``burst``; returns the audio and the packets lost."""
    if not 0 <= loss < 1 or not 0 <= burst < 1:
        raise ValueError(f"drop_packets: loss and burst must be in [0, 1), got {loss}, {burst}")
    size = max(round(packet_s * rate), 1)
    count = len(x) // size
    # P(good → bad) such that the chain spends `loss` of its time bad.
    enter = loss * (1 - burst) / max(1 - loss, 1e-9)
    draws = np.random.default_rng(seed).random(count)
    out = np.array(x, copy=True)
    bad, lost = False, 0
    for k in range(count):
        bad = bool(draws[k] < (burst if bad else enter))
        if bad:
            out[k * size : (k + 1) * size] = 0.0
            lost += 1
    return out, lost

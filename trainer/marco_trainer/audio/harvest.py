"""Noise harvested from the target: the stretches of its files where nobody speaks.

The unlabeled target files carry the target's own noise (babble, line hiss,
room tone, after the target's channel), which no generated noise imitates. A
voice-activity detector finds the non-speech stretches; they are cut out and
stored with the profile, and the augmenter mixes them in instead of coloured
noise when enough was found.

The detector (pure numpy, 20 ms frames) calls a frame speech when either

- its power is more than ``SPEECH_MARGIN_DB`` above the file's noise floor
  (the 10th percentile of frame powers, as the SNR estimator reads it), or
- its spectrum is much less flat than the quiet frames' (spectral flatness
  under ``FLATNESS_SHARE`` of theirs): voiced speech is harmonic, noise is not,
  which catches speech that is hardly louder than the noise;

then widens every speech region by ``GUARD_SECONDS`` on each side (onsets and
decays of words are quieter than their middles). What remains, in runs of at least
``MIN_RUN_SECONDS``, is noise. A file with no frame far from its floor (noise or
speech all through) gives nothing: without a contrast there is no telling them apart.

The power is read in two bands, each against its own floor: the speech band
(``VAD_BAND_HZ``) and the fricatives' band above it (``FRICATIVE_BAND_HZ``); the
flatness in the speech band, on the spectrum whitened by the quiet frames'. A car's
engine and road rumble lies under 400 Hz, where a 20 ms frame holds a few of its
cycles and its power swings by more than 3 dB from frame to frame; and its spectrum
falls so steeply that its raw flatness swung by 2x between noise frames. On the
whole band and unwhitened, 150 car files at 0-8 dB SNR gave 0.7 s of noise (4
files). In the speech band alone they gave 18.8 s, but with the talkers' s and t in
it (+13 dB at 4 kHz re 300-3000 Hz, where the car's own noise is at -55); with the
fricatives' band too, 23.0 s from 106 files at -55 dB there. The VoIP scenario's
9.8 s became 11.1.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from marco_trainer.audio.features import SNR_NOISE_PERCENTILE, frame_powers

FRAME_SECONDS = 0.02
#: 3 dB: a frame with speech as loud as the noise reads +3 dB; 20 ms of steady noise
#: varies by well under a dB, so noise frames stay below it.
SPEECH_MARGIN_DB = 3.0
FLATNESS_SHARE = 0.5
#: Guard and shortest run: synthesised and read speech pauses for 100-300 ms between
#: phrases; longer settings would keep almost nothing of such a corpus.
GUARD_SECONDS = 0.06
MIN_RUN_SECONDS = 0.1
#: A file needs frames this far above its floor to tell speech from noise at all.
MIN_CONTRAST_DB = 10.0
#: Crossfades between joined stretches, so that the joints neither click nor dip.
FADE_SECONDS = 0.01
#: Below this much harvested noise the augmenter keeps its coloured noise.
MIN_HARVEST_SECONDS = 5.0
#: Per profile shard, at most this much is kept (a noise bank, not a copy of the corpus).
MAX_HARVEST_SECONDS = 600.0
#: Where the profile stage leaves the harvested noise, next to profile.json.
NOISE_DIR = "noise"
#: The band the detector's energy and flatness are read in: where speech carries its
#: energy and harmonics, above most of the rumble of engines, roads and rooms (100 Hz is
#: 24 dB down). Not from 300 Hz: a murmur (m, n) keeps its energy under 300 Hz, and
#: from 300 Hz one was harvested 2.7 dB above white noise at 20 dB SNR.
VAD_BAND_HZ = (200.0, 3400.0)
#: Where a fricative (s, sh, f) has its energy: under the speech band's noise floor
#: in level, far above a car's in its own band. Read for energy only.
FRICATIVE_BAND_HZ = (3400.0, 7600.0)
#: A band's floor is at least this far under its loudest frame.
FLOOR_RANGE_DB = 80.0


def _flatness(x: np.ndarray, rate: int, size: int, quiet: np.ndarray) -> np.ndarray:
    """Spectral flatness (geometric / arithmetic mean of the power spectrum) per frame,
    over the bins of ``VAD_BAND_HZ``, of the spectrum whitened by the ``quiet`` frames'
    median (robust to the weak speech among them): noise of any colour, engine drones
    included, reads alike in every noise frame, and only what rises above it in a few
    bins (a voice's harmonics) reads less flat.
    Unwhitened, a steep noise (rumble falling 60 dB across the band) gave a flatness that
    swung by 2x from frame to frame, and every tenth car noise frame read as voiced."""
    count = len(quiet)
    frames = x[: count * size].reshape(count, size) * np.hanning(size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-20
    freqs = np.fft.rfftfreq(size, 1 / rate)
    band = (freqs >= VAD_BAND_HZ[0]) & (freqs <= VAD_BAND_HZ[1])
    if band.sum() >= 4:
        power = power[:, band]
    if quiet.any():
        power = power / np.median(power[quiet], axis=0)
    return np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)


def band_passed(x: np.ndarray, rate: int, low: float, high: float) -> np.ndarray:
    """``x`` band-passed to ``low``-``high`` Hz (zero phase, so frames stay aligned)."""
    sos = signal.butter(4, (low, high), "bandpass", fs=rate, output="sos")
    padding = min(len(x) - 1, 3 * (2 * len(sos) + 1))
    return signal.sosfiltfilt(sos, np.asarray(x, dtype=np.float64), padlen=max(padding, 0))


def _band_loudness(x: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """Per frame, whether it is ``SPEECH_MARGIN_DB`` above its floor in the speech band
    or in the fricative band above it; and the larger of the two bands' contrasts (dB)."""
    top_hz = 0.45 * rate
    bands = [VAD_BAND_HZ]
    if FRICATIVE_BAND_HZ[0] + 500 < top_hz:
        bands.append(FRICATIVE_BAND_HZ)
    louds, contrast = [], 0.0
    for low, high in bands:
        powers = frame_powers(band_passed(x, rate, low, min(high, top_hz)), rate, FRAME_SECONDS)
        top = max(float(powers.max()), 1e-20)
        # A band silent between words (a codec's cut top) has a floor of nothing: its
        # floor is held FLOOR_RANGE_DB under its top, so that dust is not speech.
        floor = max(
            float(np.percentile(powers, SNR_NOISE_PERCENTILE)), top * 10 ** (-FLOOR_RANGE_DB / 10)
        )
        contrast = max(contrast, 10 * np.log10(top / floor))
        louds.append(powers > floor * 10 ** (SPEECH_MARGIN_DB / 10))
    loud = np.logical_or.reduce(louds)
    return loud, contrast


def speech_frames(x: np.ndarray, rate: int) -> np.ndarray:
    """Per 20 ms frame: True where the detector hears speech (guard included)."""
    size = max(int(rate * FRAME_SECONDS), 1)
    count = len(x) // size
    if count < 2:
        return np.ones(max(count, 1), dtype=bool)
    loud, contrast = _band_loudness(x, rate)
    if contrast < MIN_CONTRAST_DB:
        return np.ones(count, dtype=bool)
    loud = loud[:count]
    flatness = _flatness(np.asarray(x, dtype=np.float64), rate, size, ~loud)
    quiet = flatness[~loud]
    tonal = flatness < FLATNESS_SHARE * float(np.median(quiet)) if len(quiet) else loud
    speech = loud | tonal
    guard = round(GUARD_SECONDS / FRAME_SECONDS)
    if guard and speech.any():
        # Dilation by ±guard frames: a frame is speech if any frame within reach is.
        padded = np.concatenate([np.zeros(guard, bool), speech, np.zeros(guard, bool)])
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * guard + 1)
        speech = np.asarray(windows.any(axis=1), dtype=bool)
    return speech


def non_speech_segments(x: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """``(start, end)`` sample spans of the runs of non-speech frames long enough to keep."""
    size = max(int(rate * FRAME_SECONDS), 1)
    speech = speech_frames(x, rate)
    edges = np.diff(np.concatenate([[1], speech.astype(np.int8), [1]]))
    starts, ends = np.nonzero(edges == -1)[0], np.nonzero(edges == 1)[0]
    shortest = int(np.ceil(MIN_RUN_SECONDS / FRAME_SECONDS))
    return [
        (int(s) * size, int(e) * size)
        for s, e in zip(starts, ends, strict=True)
        if e - s >= shortest
    ]


def join(pieces: list[np.ndarray], rate: int) -> np.ndarray:
    """Noise pieces end to end, each crossfaded into the next over ``FADE_SECONDS`` with
    equal-power (cos/sin) ramps, so the joined noise keeps its power through every joint.

    Faded to silence and butted, as they were, every joint was a dip: joined 0.15 s
    stretches of white noise had 20 ms frames at a third of the noise's power, and the
    SNR estimator reads its noise floor from the quietest frames."""
    pieces = [np.asarray(p, dtype=np.float32) for p in pieces if len(p)]
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    fade = max(int(FADE_SECONDS * rate), 1)
    angle = np.linspace(0.0, np.pi / 2, fade, dtype=np.float32)
    out = [pieces[0]]
    for piece in pieces[1:]:
        last = out[-1]
        if len(last) < 2 * fade or len(piece) < 2 * fade:
            out.append(piece)
            continue
        joint = last[-fade:] * np.cos(angle) + piece[:fade] * np.sin(angle)
        out[-1] = last[:-fade]
        out.extend([joint, piece[fade:]])
    return np.concatenate(out)


def bank(files: list[np.ndarray], rate: int) -> np.ndarray:
    """The harvests of several files as one noise bank: each at unit RMS, then joined.

    The augmenter mixes the bank at one drawn SNR per copy, so its stretches must share
    a level. Each target file has its own (its own SNR and loudness); joined as found,
    a copy's noise jumped by up to 20 dB every few hundred milliseconds. On the car
    scenario, without compression, the copies' level spread read 12.7 dB (10.6 with
    the bank at one level) against 9.5 for the same voices through the true channel,
    and the estimator's line over the chain was flat (slope 0.40; 0.65 at one level)."""
    units = []
    for found in files:
        rms = float(np.sqrt(np.mean(np.square(found, dtype=np.float64)))) if len(found) else 0.0
        if rms > 0:
            units.append((found / rms).astype(np.float32))
    return join(units, rate)


def harvest(x: np.ndarray, rate: int) -> np.ndarray:
    """The file's non-speech stretches, joined by ``join`` (float32, maybe empty)."""
    return join([x[start:end] for start, end in non_speech_segments(x, rate)], rate)

"""Signal operations of the benchmark scenarios' channels: pure numpy/scipy, no files.

Each function takes float audio and a seeded ``numpy.random.Generator`` where it
draws anything, so a channel replays bit for bit from its parameters. The
codecs, which need sox, are in :mod:`marco_demo.scenario_channels`, the I/O edge.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from marco_demo.phone_line import pink_noise

#: Headroom kept before a codec, as the demo's phone line does.
PEAK_LIMIT = 0.89


def power(audio: np.ndarray) -> float:
    return float(np.mean(np.asarray(audio, dtype=np.float64) ** 2))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` scaled to ``snr_db`` below the speech's power."""
    speech = np.asarray(speech, dtype=np.float64)
    if power(speech) == 0.0:
        raise ValueError("cannot set an SNR on silent audio")
    noise = np.resize(np.asarray(noise, dtype=np.float64), speech.size)
    scale = np.sqrt(power(speech) / (10 ** (snr_db / 10)) / max(power(noise), 1e-20))
    return speech + noise * scale


def peak_normalise(audio: np.ndarray, peak: float = PEAK_LIMIT) -> np.ndarray:
    """Scale so the largest sample is ``peak`` (headroom for the codec after it)."""
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    return (audio * (peak / top) if top > 0 else audio).astype(np.float32)


def room_impulse_response(
    rate: int,
    rt60_s: float,
    room_m: tuple[float, float, float],
    distance_m: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A shoebox room's impulse response: image-source early part, statistical late tail.

    The talker stands ``distance_m`` from the microphone at a random bearing,
    both at seated head height, as a conference-table microphone hears a far
    talker. pyroomacoustics' image method gives the direct path and the early
    reflections (order 3); the image method alone would need order ~40 and
    minutes per file to reach an RT60 near a second, so the late tail is
    Gaussian noise decaying by 60 dB over ``rt60_s`` (Polack's model), at the
    diffuse-field level Sabine predicts for this room and distance (critical
    distance 0.057·√(V/RT60) m).
    """
    import pyroomacoustics as pra

    absorption, _ = pra.inverse_sabine(rt60_s, list(room_m))
    room = pra.ShoeBox(list(room_m), fs=rate, materials=pra.Material(absorption), max_order=3)
    width, depth, height = room_m
    mic = np.array([width / 2, depth / 2, 1.2])
    bearing = rng.uniform(0, 2 * np.pi)
    talker = mic + np.array([np.cos(bearing), np.sin(bearing), 0.0]) * distance_m
    talker[:2] = np.clip(talker[:2], 0.3, np.array([width, depth]) - 0.3)
    room.add_source(talker.tolist())
    room.add_microphone(mic.tolist())
    room.compute_rir()
    early = np.asarray(room.rir[0][0], dtype=np.float64)
    direct = int(np.argmax(np.abs(early)))
    early /= np.abs(early[direct])
    critical = 0.057 * np.sqrt(width * depth * height / rt60_s)
    reverberant_energy = (float(np.linalg.norm(talker - mic)) / critical) ** 2
    t = np.arange(int(rate * rt60_s * 1.2)) / rate
    envelope = np.exp(-6.91 * t / rt60_s)  # 60 dB (amplitude 10^-3) at t = RT60
    amplitude = np.sqrt(reverberant_energy / np.sum(envelope**2))
    rir = np.zeros(direct + t.size)
    rir[: early.size] += early[: rir.size]
    rir[direct:] += rng.standard_normal(t.size) * envelope * amplitude
    return rir / np.max(np.abs(rir))


def reverberate(audio: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with ``rir``, keeping the reverberant tail (the file gets longer)."""
    wet = signal.fftconvolve(np.asarray(audio, dtype=np.float64), rir)
    return wet * np.sqrt(power(audio) / max(power(wet), 1e-20))


def engine_noise(length: int, rate: int, firing_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power engine drone: the firing frequency and its harmonics, slowly wavering.

    A four-stroke engine's noise is dominated by the firing frequency (rpm / 30
    for four cylinders) and a few harmonics; the wavering (±3 %) is the driver's
    foot on the pedal.
    """
    t = np.arange(length) / rate
    wobble = 1 + 0.03 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    phase = 2 * np.pi * np.cumsum(firing_hz * wobble) / rate
    drone = sum((0.6**k) * np.sin((k + 1) * phase + rng.uniform(0, 2 * np.pi)) for k in range(5))
    drone = np.asarray(drone, dtype=np.float64)
    return drone / (np.sqrt(power(drone)) + 1e-12)


def road_noise(length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power tyre and wind rumble: brown noise low-passed at 400 Hz."""
    brown = np.cumsum(rng.standard_normal(length))
    brown -= np.linspace(brown[0], brown[-1], length)  # no drift across the file
    sos = signal.butter(4, 400, "lowpass", fs=rate, output="sos")
    rumble = signal.sosfilt(sos, brown)
    return rumble / (np.sqrt(power(rumble)) + 1e-12)


def band_pass(audio: np.ndarray, rate: int, low_hz: float, high_hz: float) -> np.ndarray:
    """Fourth-order Butterworth band-pass (a cheap microphone or radio front end)."""
    sos = signal.butter(4, [low_hz, high_hz], "bandpass", fs=rate, output="sos")
    return signal.sosfilt(sos, np.asarray(audio, dtype=np.float64))


def cabin_eq(audio: np.ndarray, rate: int, resonance_hz: float, gain_db: float) -> np.ndarray:
    """A car cabin's boom: one resonant peak (a second-order peaking filter) added back in."""
    b, a = signal.iirpeak(resonance_hz, Q=2.0, fs=rate)
    peak = signal.lfilter(b, a, np.asarray(audio, dtype=np.float64))
    return audio + (10 ** (gain_db / 20) - 1) * peak


def packet_loss(
    audio: np.ndarray,
    rate: int,
    loss: float,
    burst: float,
    rng: np.random.Generator,
    frame_ms: float = 20.0,
) -> tuple[np.ndarray, int]:
    """Drop 20 ms frames as a Gilbert two-state channel does; returns (audio, frames lost).

    ``loss`` is the long-run share of lost frames, ``burst`` the chance that a
    loss continues into the next frame (bursty Wi-Fi and mobile links). The
    receiver conceals the first frame of a burst by repeating the last good one
    at half level and leaves the rest silent: the gaps a listener hears.
    """
    if not 0 <= loss < 1 or not 0 <= burst < 1:
        raise ValueError(f"packet_loss: loss and burst must be in [0, 1), got {loss}, {burst}")
    out = np.array(audio, dtype=np.float64, copy=True)
    frame = int(rate * frame_ms / 1000)
    # Stationary Gilbert chain: P(bad→bad) = burst, P(good→bad) chosen so P(bad) = loss.
    enter = loss * (1 - burst) / max(1 - loss, 1e-9)
    lost, bad = 0, False
    for start in range(0, out.size - frame + 1, frame):
        was_bad = bad
        bad = bool(rng.random() < (burst if bad else enter))
        if not bad:
            continue
        if was_bad or start == 0:
            out[start : start + frame] = 0.0
        else:  # the first loss of a burst: repeat the good frame before it
            out[start : start + frame] = 0.5 * out[start - frame : start]
        lost += 1
    return out, lost


def hard_clip(audio: np.ndarray, drive_db: float) -> np.ndarray:
    """Overdrive by ``drive_db`` into a hard limit at ±1 (a saturated transmitter)."""
    loud = np.asarray(audio, dtype=np.float64) / (np.max(np.abs(audio)) + 1e-12)
    return np.clip(loud * 10 ** (drive_db / 20), -1.0, 1.0)


def squelch_tail(
    audio: np.ndarray, rate: int, tail_s: float, level: float, rng: np.random.Generator
) -> np.ndarray:
    """Append the burst of hiss a receiver lets through when the carrier drops."""
    tail = rng.standard_normal(int(rate * tail_s)) * level
    fade = np.linspace(1.0, 0.2, tail.size)
    return np.concatenate([np.asarray(audio, dtype=np.float64), tail * fade])


def hiss(length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power white noise (receiver hiss)."""
    return rng.standard_normal(length)


def monitor_beeps(
    length: int, rate: int, tone_hz: float, period_s: float, rng: np.random.Generator
) -> np.ndarray:
    """Unit-power bedside-monitor beeps: 120 ms tone bursts every ``period_s``, from a random phase.

    The bursts have 10 ms raised-cosine edges (a monitor's speaker does not click).
    """
    t = np.arange(length) / rate
    on = int(rate * 0.12)
    edge = int(rate * 0.01)
    burst = np.ones(on)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(edge) / edge)
    burst[:edge], burst[-edge:] = ramp, ramp[::-1]
    gate = np.zeros(length)
    period = int(rate * period_s)
    for start in range(int(rng.integers(0, period)), length, period):
        stop = min(start + on, length)
        gate[start:stop] = burst[: stop - start]
    beeps = gate * np.sin(2 * np.pi * tone_hz * t)
    return beeps / (np.sqrt(power(beeps)) + 1e-12)


def close_talk(audio: np.ndarray, rate: int, boost_db: float) -> np.ndarray:
    """A microphone held at the lips: the proximity effect lifts the low end.

    The part below 250 Hz (second-order low-pass) is added back ``boost_db`` louder.
    """
    sos = signal.butter(2, 250.0, "lowpass", fs=rate, output="sos")
    audio = np.asarray(audio, dtype=np.float64)
    return audio + (10 ** (boost_db / 20) - 1) * signal.sosfilt(sos, audio)


def automatic_gain(
    audio: np.ndarray, rate: int, max_gain_db: float, release_s: float = 0.4
) -> np.ndarray:
    """A recorder's automatic gain control: quiet stretches are raised up to ``max_gain_db``.

    The level is the 20 ms frame RMS, held by a peak follower that rises at once
    and decays with ``release_s``; the gain brings that level to the loud
    frames' (their 95th percentile) and is capped at ``max_gain_db``, so pauses,
    and the noise in them, come up between words ("pumping").
    """
    audio = np.asarray(audio, dtype=np.float64)
    frame = int(rate * 0.02)
    count = max(1, audio.size // frame)
    rms = np.sqrt(np.mean(np.resize(audio, count * frame).reshape(count, frame) ** 2, axis=1))
    decay = np.exp(-0.02 / release_s)
    held = np.empty_like(rms)
    level = 0.0
    for i, value in enumerate(rms):
        level = max(value, level * decay)
        held[i] = level
    reference = float(np.percentile(rms, 95))
    gain = np.minimum(reference / np.maximum(held, 1e-12), 10 ** (max_gain_db / 20))
    per_sample = np.interp(np.arange(audio.size), np.arange(count) * frame + frame / 2, gain)
    return audio * per_sample


__all__ = [
    "automatic_gain",
    "band_pass",
    "cabin_eq",
    "close_talk",
    "engine_noise",
    "hard_clip",
    "hiss",
    "mix_at_snr",
    "monitor_beeps",
    "packet_loss",
    "peak_normalise",
    "pink_noise",
    "power",
    "reverberate",
    "road_noise",
    "room_impulse_response",
    "squelch_tail",
]

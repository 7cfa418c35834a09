"""Pure augmentation operators: ``(audio, sample_rate, ...) -> (audio, sample_rate)``.

``audio`` is mono float32 in [-1, 1]. Every parameter is explicit (no hidden
state, no randomness: noise comes from a seed the caller passes), so a logged
parameter set replays to the same output. numpy/scipy, vectorised: polyphase
resampling, second-order-section IIR filters, overlap-add FFT convolution.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Literal, cast

import numpy as np
from scipy import fft, signal

from marco_trainer.audio.features import active_power, integrated_loudness

Audio = np.ndarray


def resample(audio: Audio, sample_rate: int, target_rate: int) -> tuple[Audio, int]:
    """Band-limited resampling with libsoxr (polyphase, "HQ": ≥ 100 dB stopband);
    identity when the rates agree. About four times faster than scipy's
    ``resample_poly`` on short utterances, which matters at 1000 hours."""
    if target_rate == sample_rate:
        return audio, sample_rate
    import soxr

    out = soxr.resample(np.ascontiguousarray(audio, dtype=np.float32), sample_rate, target_rate)
    return out, target_rate


def change_speed(audio: Audio, sample_rate: int, factor: float) -> Audio:
    """Played ``factor`` times faster at the same rate (speed perturbation): the samples
    resampled to ``sample_rate / factor`` and read at ``sample_rate``, so the duration
    divides by the factor and every frequency (the voice's pitch and formants)
    multiplies by it."""
    if factor == 1.0:
        return audio
    slower_rate = round(sample_rate / factor)
    return resample(audio, sample_rate, slower_rate)[0]


def fit_length(audio: Audio, length: int) -> Audio:
    """Cut or zero-pad to ``length`` (a round trip through another rate may gain a sample)."""
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))


def quantize(audio: Audio, sample_rate: int, encoding: str, bits: int) -> tuple[Audio, int]:
    """Lower the bit depth: uniform PCM at ``bits``, or 8-bit μ-law companding.

    ``encoding`` is ``"pcm"`` or ``"mulaw"``; PCM at 24 bits or more is left alone
    (below float32's own resolution).
    """
    if encoding == "mulaw":
        # G.711 works on 14-bit linear samples: index a 16-bit table of μ-law round trips.
        # Clipping after scaling is the same as before it (x·32767 is monotonic and maps
        # ±1 to ±32767), and lets one buffer go through clip, round and offset in place.
        scaled = audio * 32767.0
        np.clip(scaled, -32767.0, 32767.0, out=scaled)
        np.rint(scaled, out=scaled)
        scaled += 32768.0
        return np.take(_mulaw_table(), scaled.astype(np.intp)), sample_rate
    x = np.clip(audio, -1.0, 1.0)
    if encoding != "pcm":
        raise ValueError(f"unknown encoding {encoding!r} (pcm or mulaw)")
    if bits >= 24:
        return x.astype(np.float32, copy=False), sample_rate
    scale = float(2 ** (bits - 1))
    out = np.clip(np.round(x * scale), -scale, scale - 1) / scale
    return out.astype(np.float32), sample_rate


@lru_cache(maxsize=1)
def _mulaw_table() -> np.ndarray:
    """8-bit μ-law (μ = 255) encode + decode of every 16-bit linear value."""
    x = (np.arange(65536, dtype=np.float64) - 32768) / 32767.0
    mu = 255.0
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / math.log1p(mu)
    companded = np.round(companded * 127.5) / 127.5
    return (np.sign(companded) * np.expm1(np.abs(companded) * math.log1p(mu)) / mu).astype(
        np.float32
    )


def reverberate(audio: Audio, sample_rate: int, rir: Audio, tail: int = 0) -> tuple[Audio, int]:
    """Convolve with a room impulse response (at ``sample_rate``), keeping the peak level.

    The RIR is scaled so its direct path has unit gain; the output is the input's length
    plus ``tail`` samples of the room's decay after it (0: the tail past the end belongs
    to the next utterance; zeros where the response is shorter).
    """
    rir = (rir / max(float(np.max(np.abs(rir))), 1e-12)).astype(np.float32)
    # One product of transforms at a fast length that holds the whole convolution: for
    # an utterance and a room (seconds, and a fraction of one) it beats overlap-add.
    size = fft.next_fast_len(len(audio) + len(rir) - 1, real=True)
    wet = fft.irfft(fft.rfft(audio, size) * fft.rfft(rir, size), size)
    return fit_length(wet[: len(audio) + tail], len(audio) + tail).astype(
        np.float32, copy=False
    ), sample_rate


def coloured_noise(
    length: int, sample_rate: int, beta: float, seed: int, bandwidth_hz: float | None = None
) -> Audio:
    """Gaussian noise with power spectrum ∝ 1/f^beta (0 white, 1 pink, 2 brown), unit power.

    ``bandwidth_hz`` zeroes the spectrum above it: noise that entered through a
    channel of that bandwidth.
    """
    rng = np.random.default_rng(seed)
    if bandwidth_hz is not None and bandwidth_hz >= sample_rate / 2:
        bandwidth_hz = None
    if beta == 0 and bandwidth_hz is None:
        return rng.standard_normal(length, dtype=np.float32)
    # White Gaussian noise drawn straight in the frequency domain (one inverse FFT
    # instead of two), at a fast FFT length, then cut: stationary, any stretch will do.
    size = fft.next_fast_len(length, real=True)
    bins = size // 2 + 1
    spectrum = rng.standard_normal(bins, dtype=np.float32) + 1j * rng.standard_normal(
        bins, dtype=np.float32
    )
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate).astype(np.float32)
    shape = np.ones_like(freqs)
    if beta:
        shape[1:] = freqs[1:] ** (-beta / 2)
        shape[0] = 0.0
    if bandwidth_hz is not None:
        shape[freqs > bandwidth_hz] = 0.0
    noise = fft.irfft(spectrum * shape, n=size)[:length].astype(np.float32)
    power = float(np.mean(noise * noise))
    return noise / math.sqrt(power) if power > 0 else noise


def add_noise(audio: Audio, sample_rate: int, noise: Audio, snr_db: float) -> tuple[Audio, int]:
    """Mix ``noise`` (same length) so that active speech power / noise power = ``snr_db``.

    The speech level is ``features.active_power``, the quantity the blind SNR
    estimator measures, so the profile of the result reads the SNR drawn here.
    """
    speech = active_power(audio, sample_rate)
    noise_power = float(np.dot(noise, noise)) / max(len(noise), 1)
    if speech <= 0 or noise_power <= 0:
        return audio, sample_rate
    gain = math.sqrt(speech / (noise_power * 10 ** (snr_db / 10)))
    return (audio + gain * noise).astype(np.float32, copy=False), sample_rate


def gain_to_loudness(
    audio: Audio, sample_rate: int, target_lufs: float, peak_limit: float = 0.99
) -> tuple[Audio, int]:
    """Scale to ``target_lufs`` integrated loudness; the gain is capped so peaks stay below
    ``peak_limit`` (then the result is quieter than asked rather than clipped)."""
    measured = integrated_loudness(audio, sample_rate)
    if not math.isfinite(measured):
        return audio, sample_rate
    gain = 10 ** ((target_lufs - measured) / 20)
    peak = max(float(audio.max()), -float(audio.min()))
    if peak * gain > peak_limit:
        gain = peak_limit / peak
    return (audio * np.float32(gain)).astype(np.float32, copy=False), sample_rate


def butterworth(
    audio: Audio,
    sample_rate: int,
    kind: Literal["lowpass", "highpass", "bandpass"],
    cutoff_hz: float | tuple[float, float],
    order: int = 4,
) -> tuple[Audio, int]:
    """Butterworth ``lowpass``, ``highpass`` or ``bandpass`` (cutoff a (low, high) pair)."""
    # The cutoff's type follows ``kind`` (a pair for a band-pass), which mypy cannot see.
    if kind == "bandpass":
        low, high = cast("tuple[float, float]", cutoff_hz)
        sos = np.concatenate(
            [
                _butter_sos(order, "highpass", round(low), sample_rate),
                _butter_sos(order, "lowpass", round(high), sample_rate),
            ]
        )
    else:
        sos = _butter_sos(order, kind, round(float(cast("float", cutoff_hz))), sample_rate)
    return signal.sosfilt(sos, audio, axis=-1).astype(np.float32, copy=False), sample_rate


@lru_cache(maxsize=4096)
def _butter_sos(
    order: int, kind: Literal["lowpass", "highpass"], cutoff_hz: int, sample_rate: int
) -> np.ndarray:
    """Filter design is slower than filtering a short utterance: designed once per
    (order, kind, cutoff rounded to 1 Hz, rate). A band-pass is a high-pass and a
    low-pass in cascade, so its edges are cached independently."""
    nyquist = sample_rate / 2
    wn = min(max(float(cutoff_hz), 1.0), 0.99 * nyquist)
    return signal.butter(order, wn, btype=kind, fs=sample_rate, output="sos")


def butterworth_gain(
    freqs: np.ndarray, kind: str, cutoff_hz: float | np.ndarray, order: int
) -> np.ndarray:
    """|H(f)| of an ``order``-th order Butterworth low- or high-pass (cutoffs broadcast)."""
    with np.errstate(divide="ignore", over="ignore"):
        ratio = freqs / cutoff_hz if kind == "lowpass" else cutoff_hz / freqs
        return 1.0 / np.sqrt(1.0 + ratio ** (2 * order))


def hard_clip(audio: Audio, sample_rate: int, threshold: float) -> tuple[Audio, int]:
    """Distortion: clip at ``threshold`` × the peak, then restore the peak level."""
    peak = float(np.max(np.abs(audio)))
    if peak <= 0:
        return audio, sample_rate
    limit = threshold * peak
    return (np.clip(audio, -limit, limit) / threshold).astype(np.float32), sample_rate


def saturate(audio: Audio, sample_rate: int, drive: float) -> tuple[Audio, int]:
    """Soft saturation tanh(drive·x)/tanh(drive) (an overdriven analogue stage)."""
    if drive <= 0:
        return audio, sample_rate
    return (np.tanh(drive * audio) / math.tanh(drive)).astype(np.float32), sample_rate


#: Codec round trips through libsndfile: container, subtype, and the rates the codec
#: takes (the audio is resampled to the first one when its own rate is not among them).
CODEC_FORMATS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "mulaw": ("WAV", "ULAW", ()),
    "alaw": ("WAV", "ALAW", ()),
    "gsm": ("WAV", "GSM610", (8000,)),
    "adpcm": ("WAV", "IMA_ADPCM", ()),
    "mp3": ("MP3", "MPEG_LAYER_III", (16000, 8000, 11025, 12000, 22050, 24000, 32000, 44100)),
    "opus": ("OGG", "OPUS", (16000, 8000, 12000, 24000, 48000)),
    "vorbis": ("OGG", "VORBIS", ()),
}

#: Codecs whose bitrate libsndfile's compression level sets.
LEVEL_CODECS = ("mp3", "opus", "vorbis")


def codec_round_trip(
    audio: Audio, sample_rate: int, codec: str, level: float | None = None
) -> tuple[Audio, int]:
    """Encode with ``codec`` and decode again (libsndfile, in memory); same rate and length.

    The codec's artefacts are what a model trained on the result must learn to hear
    through: G.711's level-dependent quantisation noise, GSM's LPC buzz, the pre-echo
    and band holes of perceptual codecs. ``level`` is libsndfile's compression level
    of a lossy codec (0: its best quality, toward 1: its lowest bitrate; MP3 at a
    constant bitrate, which at 16 kHz steps 83/58/42/25/17/8 kbit/s at 0.5/0.7/0.8/0.9/
    0.95/0.97); None: libsndfile's default (MP3 at 16 kHz: about 53 kbit/s, few holes).
    """
    import io

    import soundfile as sf

    if codec not in CODEC_FORMATS:
        raise ValueError(f"unknown codec {codec!r} (one of {sorted(CODEC_FORMATS)})")
    container, subtype, rates = CODEC_FORMATS[codec]
    rate = sample_rate if not rates or sample_rate in rates else rates[0]
    x, _ = resample(audio, sample_rate, rate)
    options: dict[str, Any] = {}
    if level is not None:
        if codec not in LEVEL_CODECS:
            raise ValueError(f"codec {codec!r} has no compression level (only {LEVEL_CODECS})")
        options["compression_level"] = level
        if codec == "mp3":
            options["bitrate_mode"] = "CONSTANT"
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(x, -1.0, 1.0), rate, format=container, subtype=subtype, **options)
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float32")
    decoded, _ = resample(decoded, rate, sample_rate)
    return fit_length(decoded, len(audio)), sample_rate


#: The equaliser's FIR length. 16 ms resolved 62 Hz, so gains at 100-250 Hz smeared into
#: each other: copies equalised to the car and meeting targets read 4-5 dB over them at
#: 200 Hz.
EQ_TAPS_SECONDS = 0.064


def equalise(
    audio: Audio, sample_rate: int, centres_hz: list[float], gains_db: list[float]
) -> tuple[Audio, int]:
    """Zero-phase linear-phase FIR through the given gains at the band centres.

    The gain is interpolated on a log-frequency axis between centres and held flat
    beyond the first and last one. ``EQ_TAPS_SECONDS`` of taps resolve 16 Hz, finer
    than the third-octave bands at 100-250 Hz (23-58 Hz wide); the filter is
    symmetric with an odd length, so convolving "same" keeps the audio aligned.
    """
    nyquist = sample_rate / 2
    inside = [(c, g) for c, g in zip(centres_hz, gains_db, strict=True) if c < nyquist]
    if not inside or all(g == 0 for _, g in inside):
        return audio, sample_rate
    taps = _eq_taps(sample_rate, tuple(inside))
    out = signal.oaconvolve(audio, taps, mode="same")
    return out.astype(np.float32, copy=False), sample_rate


@lru_cache(maxsize=256)
def _eq_taps(sample_rate: int, points: tuple[tuple[float, float], ...]) -> np.ndarray:
    nyquist = sample_rate / 2
    numtaps = int(EQ_TAPS_SECONDS * sample_rate) | 1
    grid = np.linspace(0.0, nyquist, 512)
    log_centres = np.log([c for c, _ in points])
    gains = np.interp(np.log(np.maximum(grid, 1.0)), log_centres, [g for _, g in points])
    return signal.firwin2(numtaps, grid, 10 ** (gains / 20), fs=sample_rate).astype(np.float32)


def compress(
    audio: Audio, sample_rate: int, threshold_db: float, ratio: float, frame_seconds: float = 0.01
) -> tuple[Audio, int]:
    """Static downward compressor on a frame-RMS envelope: above ``threshold_db`` (dBFS)
    the level rises 1/``ratio`` dB per dB. The gain is interpolated between frame
    centres, so it has no steps (a phone line's AGC acts on this time scale too)."""
    if ratio <= 1:
        return audio, sample_rate
    size = max(int(frame_seconds * sample_rate), 1)
    count = max(len(audio) // size, 1)
    frames = np.resize(audio, count * size).reshape(count, size).astype(np.float64)
    level = 10 * np.log10(np.maximum(np.mean(frames * frames, axis=1), 1e-20))
    gain_db = -(1 - 1 / ratio) * np.maximum(level - threshold_db, 0.0)
    centres = (np.arange(count) + 0.5) * size
    gain = 10 ** (np.interp(np.arange(len(audio)), centres, gain_db) / 20)
    return (audio * gain).astype(np.float32), sample_rate

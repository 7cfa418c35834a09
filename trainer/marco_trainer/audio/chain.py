"""Eq. 3: x_aug = (F_filt ∘ F_lufs ∘ F_noise ∘ F_rev ∘ R)(x), read as the composition it is."""

from __future__ import annotations

import numpy as np

from marco_trainer.audio import features, ops
from marco_trainer.audio.assets import Assets
from marco_trainer.audio.params import ChainParams, FilterStep

#: Frames the filter choice looks at: a fixed cost per utterance, whatever its length.
RESOLVE_FRAMES = 12

Audio = np.ndarray


def channel(x: Audio, sr: int, p: ChainParams) -> tuple[Audio, int]:
    """R: through the drawn channel rate and bit depth.

    The audio stays at the lower of the channel and model rates; the way back
    up to the model's rate is the chain's last step. The operators between are
    linear or pointwise on a signal the channel already band-limited, so
    running them at the channel rate gives the same audio at half the work
    (for 8 kHz channels) and the channel loss stays.
    """
    x, sr = ops.resample(x, sr, p.resample.sample_rate)
    x, sr = ops.quantize(x, sr, p.resample.encoding, p.resample.bits)
    return ops.resample(x, sr, min(sr, p.output_rate))


def reverb(x: Audio, sr: int, p: ChainParams, assets: Assets) -> tuple[Audio, int]:
    if p.reverb is None:
        return x, sr
    return ops.reverberate(x, sr, assets.rirs_at(sr)[p.reverb.rir_index])


def noise(x: Audio, sr: int, p: ChainParams, assets: Assets) -> tuple[Audio, int]:
    step = p.noise
    if step.source == "file":
        clip = assets.noises_at(sr)[step.file_index or 0]
        if len(clip) < len(x):
            clip = np.tile(clip, len(x) // len(clip) + 1)
        start = int(step.offset * (len(clip) - len(x)))
        background = clip[start : start + len(x)]
    else:
        background = ops.coloured_noise(len(x), sr, step.beta, step.seed, step.bandwidth_hz)
    return ops.add_noise(x, sr, background, step.snr_db)


def loudness(x: Audio, sr: int, p: ChainParams) -> tuple[Audio, int]:
    return ops.gain_to_loudness(x, sr, p.loudness.target_lufs)


def _butterworth_gain(freqs: np.ndarray, kind: str, cutoffs: np.ndarray, order: int) -> np.ndarray:
    """|H(f)| of Butterworth filters, one row per cutoff."""
    with np.errstate(divide="ignore"):
        ratio = freqs[None, :] / cutoffs[:, None]
        if kind == "highpass":
            ratio = 1.0 / ratio
    return 1.0 / np.sqrt(1.0 + ratio ** (2 * order))


def resolve_filter(x: Audio, sr: int, step: FilterStep) -> FilterStep:
    """Pick the high-/low-pass cutoffs that bring the shape of ``x`` closest to the drawn one.

    Every candidate (none, a low-pass, a high-pass, or both) is scored by
    weighting the frames' magnitude spectra with the Butterworth magnitude
    response and measuring the mean rolloff and centroid that would result:
    one vectorised pass over a bounded set of frames, no trial filtering. The
    score is the relative rolloff error plus half the relative centroid error.
    """
    if step.resolved:
        return step
    magnitude, freqs = features.active_spectra(x, sr, max_frames=RESOLVE_FRAMES)
    if not len(magnitude):
        return step.model_copy(update={"resolved": True})
    nyquist = sr / 2
    lows = np.concatenate([[np.inf], np.geomspace(300.0, 0.95 * nyquist, 16)])
    highs = np.concatenate([[0.0], np.geomspace(50.0, min(1200.0, 0.5 * nyquist), 10)])
    with np.errstate(divide="ignore"):
        low_gain = _butterworth_gain(freqs, "lowpass", lows, step.order).astype(np.float32)
        high_gain = _butterworth_gain(freqs, "highpass", np.maximum(highs, 1e-9), step.order)
    high_gain = high_gain.astype(np.float32)
    high_gain[0] = 1.0
    f32 = freqs.astype(np.float32)

    def scores(gains: np.ndarray) -> np.ndarray:
        weighted = magnitude[None, :, :] * gains[:, None, :]  # (candidates, frames, bins)
        totals = np.maximum(weighted.sum(axis=-1), 1e-12)
        centroid = ((weighted @ f32) / totals).mean(axis=-1)
        rolloff = features.mean_rolloff(weighted, freqs)
        return np.abs(rolloff / step.target_rolloff_hz - 1) + 0.5 * np.abs(
            centroid / step.target_centroid_hz - 1
        )

    # Coordinate descent over (high-pass, low-pass): low-pass alone, then the
    # high-pass under it, then the low-pass again: 45 candidates, not 187.
    high = 0
    low = int(np.argmin(scores(low_gain)))
    high = int(np.argmin(scores(high_gain * low_gain[low])))
    low = int(np.argmin(scores(low_gain * high_gain[high])))
    return step.model_copy(
        update={
            "resolved": True,
            "highpass_hz": float(highs[high]) if high else None,
            "lowpass_hz": float(lows[low]) if low else None,
        }
    )


def filtering(x: Audio, sr: int, step: FilterStep) -> tuple[Audio, int]:
    if step.highpass_hz:
        x, sr = ops.butterworth(x, sr, "highpass", step.highpass_hz, step.order)
    if step.lowpass_hz:
        x, sr = ops.butterworth(x, sr, "lowpass", step.lowpass_hz, step.order)
    return x, sr


def apply_chain(
    x: Audio, sr: int, p: ChainParams, assets: Assets
) -> tuple[Audio, int, ChainParams]:
    """The whole chain, innermost first, exactly as Eq. 3 nests it.

    Returns the parameters as applied (the filter resolved), the ones to log.
    """
    length = round(len(x) * p.output_rate / sr)
    x, sr = channel(x, sr, p)
    x, sr = reverb(x, sr, p, assets)
    x, sr = noise(x, sr, p, assets)
    step = resolve_filter(x, sr, p.filter)
    # F_filt ∘ F_lufs with the gain measured at the output: the filter is linear,
    # so F_filt(g·x) = g·F_filt(x), and the drawn loudness is what comes out.
    x, sr = filtering(x, sr, step)
    x, sr = loudness(x, sr, p)
    x, sr = ops.resample(x, sr, p.output_rate)
    return ops.fit_length(x, length), sr, p.model_copy(update={"filter": step})

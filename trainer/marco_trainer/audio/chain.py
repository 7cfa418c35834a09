"""Eq. 3: x_aug = (F_filt ∘ F_lufs ∘ F_noise ∘ F_rev ∘ R)(x), read as the composition it is."""

from __future__ import annotations

import numpy as np

from marco_trainer.audio import features, ops
from marco_trainer.audio.assets import Assets
from marco_trainer.audio.params import ChainParams, FilterStep

#: Frames the filter choice looks at: a fixed cost per utterance, whatever its length.
RESOLVE_FRAMES = 24

Audio = np.ndarray


def channel(x: Audio, sr: int, p: ChainParams) -> tuple[Audio, int]:
    """R: through the drawn channel rate and bit depth, back to the model's rate."""
    x, sr = ops.resample(x, sr, p.resample.sample_rate)
    x, sr = ops.quantize(x, sr, p.resample.encoding, p.resample.bits)
    return ops.resample(x, sr, p.output_rate)


def reverb(x: Audio, sr: int, p: ChainParams, assets: Assets) -> tuple[Audio, int]:
    if p.reverb is None:
        return x, sr
    return ops.reverberate(x, sr, assets.rirs[p.reverb.rir_index])


def noise(x: Audio, sr: int, p: ChainParams, assets: Assets) -> tuple[Audio, int]:
    step = p.noise
    if step.source == "file":
        clip = assets.noises[step.file_index or 0]
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
    with np.errstate(divide="ignore"):
        ratio = freqs[None, :] / cutoffs[:, None]
        if kind == "highpass":
            ratio = 1.0 / ratio
    return 1.0 / np.sqrt(1.0 + ratio ** (2 * order))


def resolve_filter(x: Audio, sr: int, step: FilterStep) -> FilterStep:
    """Pick type and cutoff that bring the mean rolloff of ``x`` closest to the drawn one.

    Each candidate's rolloff is predicted by weighting the frames' magnitude
    spectra with the Butterworth magnitude response: one vectorised pass over a
    bounded set of frames, no trial filtering.
    """
    if step.kind is not None:
        return step
    magnitude, freqs = features.active_spectra(x, sr, max_frames=RESOLVE_FRAMES)
    if not len(magnitude):
        return step.model_copy(update={"kind": "none"})
    nyquist = sr / 2
    lows = np.geomspace(300.0, 0.95 * nyquist, 20)
    highs = np.geomspace(50.0, min(1500.0, 0.5 * nyquist), 12)
    gains = np.concatenate(
        [
            np.ones((1, len(freqs))),
            _butterworth_gain(freqs, "lowpass", lows, step.order),
            _butterworth_gain(freqs, "highpass", highs, step.order),
        ]
    ).astype(np.float32)
    predicted = features.mean_rolloff(magnitude[None, :, :] * gains[:, None, :], freqs)
    best = int(np.argmin(np.abs(predicted - step.target_rolloff_hz)))
    if best == 0:
        return step.model_copy(update={"kind": "none"})
    if best <= len(lows):
        return step.model_copy(update={"kind": "lowpass", "cutoff_hz": float(lows[best - 1])})
    return step.model_copy(
        update={"kind": "highpass", "cutoff_hz": float(highs[best - 1 - len(lows)])}
    )


def filtering(x: Audio, sr: int, step: FilterStep) -> tuple[Audio, int]:
    if step.kind in (None, "none") or step.cutoff_hz is None:
        return x, sr
    return ops.butterworth(x, sr, step.kind, step.cutoff_hz, step.order)


def apply_chain(
    x: Audio, sr: int, p: ChainParams, assets: Assets
) -> tuple[Audio, int, ChainParams]:
    """The whole chain, innermost first, exactly as Eq. 3 nests it.

    Returns the parameters as applied (the filter resolved), the ones to log.
    """
    x, sr = channel(x, sr, p)
    x, sr = reverb(x, sr, p, assets)
    x, sr = noise(x, sr, p, assets)
    step = resolve_filter(x, sr, p.filter)
    # F_filt ∘ F_lufs with the gain measured at the output: the filter is linear,
    # so F_filt(g·x) = g·F_filt(x), and the drawn loudness is what comes out.
    x, sr = filtering(x, sr, step)
    x, sr = loudness(x, sr, p)
    return x, sr, p.model_copy(update={"filter": step})

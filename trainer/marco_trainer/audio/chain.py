"""Eq. 3: x_aug = (F_filt ∘ F_lufs ∘ F_noise ∘ F_rev ∘ R)(x), read as the composition it is."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from marco_trainer.audio import channel as channels
from marco_trainer.audio import features, ops
from marco_trainer.audio.assets import Assets
from marco_trainer.audio.dropouts import drop_packets
from marco_trainer.audio.params import (
    CHANNEL_FILTER_ORDER,
    ChainParams,
    ChannelStep,
    CompressionStep,
    FilterStep,
)

#: The measured upper band edge is cut into an utterance only when the utterance is this
#: much louder above the edge than the target is (both re their speech band): the fall
#: that makes an edge (``channel.EDGE_DROP_DB``) must be the channel's, not the voices'.
BAND_EXCESS_DB = channels.EDGE_DROP_DB
#: Ratios the compressor chooses from (1: leave alone).
COMPRESSION_RATIOS = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
#: Compressor thresholds tried, as percentiles of the utterance's frame levels.
COMPRESSION_THRESHOLD_PERCENTILES = (50.0, 25.0)
#: Frames the filter choice looks at: a fixed cost per utterance, whatever its length.
RESOLVE_FRAMES = 8
#: Their length: half the profile's 32 ms, half the bins to score (62.5 Hz at 8 kHz).
RESOLVE_FRAME_SECONDS = 0.016

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
    tail = round(p.reverb.tail_s * sr)
    return ops.reverberate(x, sr, assets.rirs_at(sr)[p.reverb.rir_index], tail=tail)


def noise(x: Audio, sr: int, p: ChainParams, assets: Assets) -> tuple[Audio, int]:
    step = p.noise
    clips = assets.noises_at(sr) if step.source != "coloured" else assets.bank_at(sr)
    clip = clips[step.index]
    if len(clip) < len(x):
        clip = np.tile(clip, len(x) // len(clip) + 1)
    start = int(step.offset * (len(clip) - len(x)))
    return ops.add_noise(x, sr, clip[start : start + len(x)], step.snr_db)


def loudness(x: Audio, sr: int, p: ChainParams) -> tuple[Audio, int]:
    return ops.gain_to_loudness(x, sr, p.loudness.target_lufs)


def _butterworth_gain(freqs: np.ndarray, kind: str, cutoffs: np.ndarray, order: int) -> np.ndarray:
    """|H(f)| of Butterworth filters, one column per cutoff: ``(bins, cutoffs)``."""
    return ops.butterworth_gain(freqs[:, None], kind, cutoffs[None, :], order)


def _scoring_matrix(gains: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """``((bins + 1) · candidates, bins)``: the running sums of every candidate's weighted
    spectrum (``bins`` blocks of rows) and the candidates' centroid numerators (one
    block), so that scoring a set of frames against every candidate is one matrix
    product, laid out bins first like a running sum along frequency."""
    bins, count = gains.shape
    matrix = np.empty((bins + 1, count, bins), dtype=np.float32)
    matrix[:bins] = np.tril(np.ones((bins, bins)))[:, None, :] * gains.T[None, :, :]
    matrix[bins] = (gains * freqs[:, None]).T
    return matrix.reshape((bins + 1) * count, bins)


@lru_cache(maxsize=64)
def _candidates(sr: int, bins: int, order: int) -> tuple[np.ndarray, ...]:
    """Cutoff grids, their gains and scoring matrices, once per (rate, FFT size, order).
    Index 0 is "none"."""
    nyquist = sr / 2
    freqs = np.linspace(0.0, nyquist, bins)
    lows = np.concatenate([[np.inf], np.geomspace(300.0, 0.95 * nyquist, 12)])
    highs = np.concatenate([[0.0], np.geomspace(50.0, min(1200.0, 0.5 * nyquist), 8)])
    low_gain = _butterworth_gain(freqs, "lowpass", lows, order)
    high_gain = _butterworth_gain(freqs, "highpass", np.maximum(highs, 1e-9), order)
    high_gain[:, 0] = 1.0
    return (
        lows,
        highs,
        low_gain.astype(np.float32),
        high_gain.astype(np.float32),
        _scoring_matrix(low_gain, freqs),
        _scoring_matrix(high_gain, freqs),
    )


def resolve_filter(x: Audio, sr: int, step: FilterStep) -> FilterStep:
    """Pick the high-/low-pass cutoffs that bring the shape of ``x`` closest to the drawn one.

    Every candidate (none, a low-pass, a high-pass, or both) is scored by
    weighting the frames' magnitude spectra with the Butterworth magnitude
    response and measuring the mean rolloff and centroid that would result:
    one matrix product over a bounded set of frames, no trial filtering. The
    score is the relative rolloff error plus half the relative centroid error.
    """
    if step.resolved:
        return step
    magnitude, freqs = features.active_spectra(
        x, sr, max_frames=RESOLVE_FRAMES, frame_seconds=RESOLVE_FRAME_SECONDS
    )
    if not len(magnitude):
        return step.model_copy(update={"resolved": True})
    bins = len(freqs)
    lows, highs, low_gain, high_gain, low_matrix, high_matrix = _candidates(sr, bins, step.order)
    spectra = np.ascontiguousarray(magnitude.T)  # (bins, frames)
    frames = spectra.shape[1]
    share = np.float32(features.ROLLOFF_SHARE)
    # Means over frames relative to the targets, as sums times one constant each.
    per_rolloff = 1.0 / (frames * step.target_rolloff_hz)
    per_centroid = 1.0 / (frames * step.target_centroid_hz)

    def best(matrix: np.ndarray, weighted: np.ndarray) -> int:
        out = (matrix @ weighted).reshape(bins + 1, -1, frames)
        totals = np.maximum(out[bins - 1], 1e-12)  # (candidates, frames)
        below = (out[:bins] < share * totals).view(np.uint8)
        index = np.add.reduce(below, axis=0, dtype=np.int16)  # bins under the rolloff share
        np.minimum(index, bins - 1, out=index)
        rolloff = freqs.take(index).sum(axis=-1).tolist()
        centroid = (out[bins] / totals).sum(axis=-1).tolist()
        # A dozen numbers: plain Python is quicker than another round of array calls.
        score = [
            abs(r * per_rolloff - 1) + 0.5 * abs(c * per_centroid - 1)
            for r, c in zip(rolloff, centroid, strict=True)
        ]
        return score.index(min(score))

    # Coordinate descent over (high-pass, low-pass): low-pass alone, then the
    # high-pass under it, then the low-pass again: 35 candidates, not 117. The
    # filter held fixed weights the spectra, so each round is one product. With
    # no high-pass the last round would repeat the first one exactly.
    low = best(low_matrix, spectra) if step.lowpass_allowed else 0
    high = best(high_matrix, spectra * low_gain[:, low : low + 1]) if step.highpass_allowed else 0
    if high and step.lowpass_allowed:
        low = best(low_matrix, spectra * high_gain[:, high : high + 1])
    return step.model_copy(
        update={
            "resolved": True,
            "highpass_hz": float(highs[high]) if high else None,
            "lowpass_hz": float(lows[low]) if low else None,
        }
    )


def filtering(x: Audio, sr: int, step: FilterStep) -> tuple[Audio, int]:
    if step.highpass_hz and step.lowpass_hz:
        return ops.butterworth(x, sr, "bandpass", (step.highpass_hz, step.lowpass_hz), step.order)
    if step.highpass_hz:
        return ops.butterworth(x, sr, "highpass", step.highpass_hz, step.order)
    if step.lowpass_hz:
        return ops.butterworth(x, sr, "lowpass", step.lowpass_hz, step.order)
    return x, sr


def excess_above(
    own: list[float | None], target: list[float | None], edge_hz: float
) -> float | None:
    """Mean of own − target (dB) over the third-octave bands centred above ``edge_hz``
    that both have a level; None when none has."""
    pairs = [
        o - t
        for c, o, t in zip(channels.THIRD_OCTAVES_HZ, own, target, strict=True)
        if c > edge_hz and o is not None and t is not None
    ]
    return float(np.mean(pairs)) if pairs else None


def resolve_channel(x: Audio, sr: int, step: ChannelStep) -> ChannelStep:
    """The band edges as applied to this utterance; the equaliser's gains are the set's
    (``eq_calibration``: one response for every copy, as a channel has), given with the
    step, and none (flat) before that calibration has run.

    The upper edge is dropped for an utterance that is not ``BAND_EXCESS_DB`` louder
    above it than the target: the detector reads a voice's own high-frequency rolloff as
    an edge (the car scenario's target, a 40-7000 Hz microphone, read 4.2 kHz, with more
    energy above it than the source has), and an 8th-order low-pass there took away what
    the target keeps. The equaliser shapes those bands instead."""
    if step.resolved or not step.eq or step.eq_target_db is None:
        return step.model_copy(update={"resolved": True})
    if step.band_high_hz:
        db, freqs = channels.long_term_spectrum(x, sr)
        own = channels.band_levels(db, freqs)
        excess = excess_above(own, step.eq_target_db, step.band_high_hz)
        if excess is not None and excess < BAND_EXCESS_DB:
            step = step.model_copy(update={"band_high_hz": None})
    return step.model_copy(update={"resolved": True})


def line_filter(x: Audio, sr: int, step: ChannelStep) -> tuple[Audio, int]:
    """The channel's linear part: band-pass at the measured edges, then the equaliser."""
    order = CHANNEL_FILTER_ORDER
    if step.band_low_hz and step.band_high_hz and step.band_high_hz < sr / 2:
        x, sr = ops.butterworth(x, sr, "bandpass", (step.band_low_hz, step.band_high_hz), order)
    elif step.band_high_hz and step.band_high_hz < sr / 2:
        x, sr = ops.butterworth(x, sr, "lowpass", step.band_high_hz, order)
    elif step.band_low_hz:
        x, sr = ops.butterworth(x, sr, "highpass", step.band_low_hz, order)
    if step.eq_gains_db:
        x, sr = ops.equalise(x, sr, list(channels.THIRD_OCTAVES_HZ), step.eq_gains_db)
    return x, sr


def saturation(x: Audio, sr: int, step: ChannelStep) -> tuple[Audio, int]:
    """Hard clipping at the level that leaves ``clip_share`` of the samples on flat tops.

    The level is the utterance's own (1 - share) quantile of magnitude, so the drawn
    share is met whatever the utterance's crest factor; the loudness step after it
    sets the level, as it would after an overdriven stage.
    """
    if not step.clip_share or not x.size:
        return x, sr
    magnitude = np.abs(x)
    level = float(np.quantile(magnitude, 1.0 - step.clip_share))
    if level <= 0:  # mostly digital silence (or all of it): nothing to flatten
        return x, sr
    return ops.hard_clip(x, sr, level / float(magnitude.max()))


def resolve_compression(x: Audio, sr: int, step: CompressionStep) -> CompressionStep:
    """A threshold (the utterance's median or lower-quartile frame level) and a ratio
    from ``COMPRESSION_RATIOS`` whose predicted spread (frame levels above the
    threshold divided by the ratio) is closest to the drawn one, the gentlest such
    pair first; ratio 1 when the audio is already as narrow. Downward compression
    cannot lift the pauses, so a lower threshold is what reaches narrow targets."""
    if step.resolved:
        return step
    levels = features.frame_levels_db(x, sr)
    low_q, high_q = features.SPREAD_PERCENTILES
    best, best_error = (float(np.median(levels)), 1.0), float("inf")
    for quantile in COMPRESSION_THRESHOLD_PERCENTILES:
        threshold = float(np.percentile(levels, quantile))
        for ratio in COMPRESSION_RATIOS:
            out = np.where(levels > threshold, threshold + (levels - threshold) / ratio, levels)
            spread = float(np.percentile(out, high_q) - np.percentile(out, low_q))
            error = abs(spread - step.target_spread_db)
            if error < best_error - 0.25:  # a quarter dB better, or keep the gentler one
                best, best_error = (threshold, ratio), error
    threshold, ratio = best
    return step.model_copy(
        update={"resolved": True, "threshold_db": round(threshold, 2), "ratio": ratio}
    )


def compression(x: Audio, sr: int, step: CompressionStep) -> tuple[Audio, int]:
    if step.ratio <= 1 or step.threshold_db is None:
        return x, sr
    return ops.compress(x, sr, step.threshold_db, step.ratio)


def apply_chain(
    x: Audio, sr: int, p: ChainParams, assets: Assets
) -> tuple[Audio, int, ChainParams]:
    """The whole chain, innermost first, exactly as Eq. 3 nests it.

    Returns the parameters as applied (the filter resolved), the ones to log. Speed
    perturbation, when drawn, comes first: it changes the talker, whom the channel then
    carries, and the output keeps its new duration; a room's kept tail lengthens it too.
    """
    if p.speed is not None:
        x = ops.change_speed(x, sr, p.speed)
    length = round(len(x) * p.output_rate / sr)
    if p.reverb is not None:
        length += round(p.reverb.tail_s * p.output_rate)
    x, sr = channel(x, sr, p)
    x, sr = reverb(x, sr, p, assets)
    x, sr = noise(x, sr, p, assets)
    updates: dict[str, object] = {}
    # F_lufs's nonlinear part first (compression), then F_filt's linear parts, then the
    # gain: F_filt ∘ F_lufs with the gain measured at the output, since the filters are
    # linear, F_filt(g·x) = g·F_filt(x), and the drawn loudness is what comes out.
    if p.compression is not None:
        updates["compression"] = squeeze = resolve_compression(x, sr, p.compression)
        x, sr = compression(x, sr, squeeze)
    line = None
    if p.channel is not None:
        updates["channel"] = line = resolve_channel(x, sr, p.channel)
        x, sr = line_filter(x, sr, line)
    updates["filter"] = step = resolve_filter(x, sr, p.filter)
    x, sr = filtering(x, sr, step)
    if line is not None:
        # The overdriven stage after the microphone's filters (a transmitter, a converter
        # run hot): its flat tops reach the listener, so nothing linear comes after but
        # the gain, and the codec last.
        x, sr = saturation(x, sr, line)
    x, sr = loudness(x, sr, p)
    if line is not None and line.codec:
        # The codec is nonlinear, so it comes last, as the last stage of the channel.
        x, sr = ops.codec_round_trip(x, sr, line.codec, line.codec_level)
    x, sr = ops.resample(x, sr, p.output_rate)
    if p.dropouts is not None:
        # The network loses decoded packets whole: exact silence at the output rate
        # (resampling after would smear the gaps' edges).
        lossy = p.dropouts
        x, lost = drop_packets(x, sr, lossy.packet_s, lossy.loss, lossy.burst, lossy.seed)
        updates["dropouts"] = lossy.model_copy(update={"packets_lost": lost})
    return ops.fit_length(x, length), sr, p.model_copy(update=updates)

"""What the target's channel did to its audio: codec and pass band, measured per file.

Pure functions of samples (and the container's subtype). Four measurements:

- **Codec from the container**: the soundfile subtype names it (ULAW, ALAW,
  GSM610, MPEG_LAYER_III, OPUS, VORBIS, ADPCM…). Exact, confidence 1.
- **Codec from the samples**: a G.711 file decoded into 16-bit PCM keeps only
  the 256 levels of its companding law, so when (nearly) every sample sits on
  the μ-law or the A-law level set, that law was the last thing the audio went
  through. Ordinary 16-bit audio puts a few per cent of its samples there by
  chance (the sets are dense near zero); the threshold is 98 %. Gone once the
  decoded audio was resampled or its level changed; then only the band is seen.
- **A perceptual codec from its spectral holes**: MP3 (and AAC, Vorbis) at a low
  bitrate spends no bits on the bands under its masking threshold, so in the
  loud frames some time-frequency cells are empty: far under the spectral
  envelope around them, where speech and any microphone's noise leave energy.
  ``spectral_holes`` is the share of such cells; from ``HOLE_SHARE`` on, the
  file counts as coded (``mp3``: the codec the chain applies for the family).
  Measured on the scenarios' targets: VoIP at 12-16 kbit/s MP3 has a median of
  0.09 (p10 0.06); the clean source, the car, meeting and demo targets stay
  under 0.003 (p90), and MP3 at 41 kbit/s or more under 0.004.
- **Pass band from the long-term spectrum**: the mean power spectrum of the
  active frames, smoothed, in dB. A channel's band edge is a cliff: the level
  falls by more in a few hundred hertz than speech's own spectral tilt does
  over octaves. The upper edge is where the steepest fall above 2 kHz crosses
  half its depth; the file counts as narrowband when that fall is at least
  ``EDGE_DROP_DB`` over ``EDGE_WIDTH_HZ`` and everything above stays well below
  the speech band. That finds a 300–3400 Hz telephone band in audio stored at
  16 kHz as well as at 8 kHz, where the sample rate alone says nothing.

``band_levels`` also reduces the long-term spectrum to fixed third-octave
bands (the same grid at every rate) for the channel equaliser.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, Field
from scipy.ndimage import maximum_filter1d

from marco_trainer.audio.spectra import active_spectra, third_octave_edges

#: Codecs the chain can apply (``ops.codec_round_trip``); profiles say ``pcm`` for none.
Codec = Literal["mulaw", "alaw", "gsm", "adpcm", "mp3", "opus", "vorbis"]
CODECS: tuple[str, ...] = get_args(Codec)
#: Codec names per soundfile subtype.
SUBTYPE_CODECS: dict[str, str] = {
    "ULAW": "mulaw",
    "ALAW": "alaw",
    "GSM610": "gsm",
    "MPEG_LAYER_III": "mp3",
    "MPEG_LAYER_II": "mp3",
    "OPUS": "opus",
    "VORBIS": "vorbis",
    "IMA_ADPCM": "adpcm",
    "MS_ADPCM": "adpcm",
    "G721_32": "adpcm",
}
#: Share of samples on a G.711 level set from which the file counts as companded.
LAW_SHARE = 0.98
#: Fewer samples than this say nothing about a level set.
LAW_MIN_SAMPLES = 4000
#: Long-term spectrum: frame length (fine enough to place an edge within ~30 Hz).
LTAS_FRAME_SECONDS = 0.064
#: Smoothing of the long-term spectrum before looking for edges.
LTAS_SMOOTH_HZ = 100.0
#: An edge is a fall of at least this much (dB) within EDGE_WIDTH_HZ.
EDGE_DROP_DB = 10.0
EDGE_WIDTH_HZ = 300.0
#: Above the upper edge the level stays at least this far under the speech band.
STOPBAND_DB = 15.0
#: Below 1 kHz, the lower edge is the top of the region this far under the speech band.
LOW_EDGE_DB = 8.0
#: Edges in the top 10 % of the band are the storage rate's own anti-alias filter
#: (or a wideband recording's), not a channel.
NYQUIST_MARGIN = 0.9
#: The speech band the levels refer to.
REFERENCE_BAND_HZ = (300.0, 3000.0)
#: A spectral hole: a cell this far (dB) under the envelope (the loudest cell within
#: HOLE_SPAN_HZ). A Hann window leaks a neighbour's energy at -31 dB and falls from
#: there; in clean synthetic speech 99.9 % of the cells stay above -50 (median file).
HOLE_DEPTH_DB = 50.0
HOLE_SPAN_HZ = 250.0
#: Where holes are counted: speech is loud there and a low-bitrate codec starts cutting.
HOLE_BAND_HZ = (1000.0, 5000.0)
#: Share of holes from which a file counts as perceptually coded (between the 0.003 of
#: uncoded audio and the 0.06 of the VoIP target's 10th percentile).
HOLE_SHARE = 0.02
#: Third-octave band centres of the equaliser grid (IEC 61260 nominal).
THIRD_OCTAVES_HZ: tuple[float, ...] = (
    100.0, 125.0, 160.0, 200.0, 250.0, 315.0, 400.0, 500.0, 630.0, 800.0, 1000.0,
    1250.0, 1600.0, 2000.0, 2500.0, 3150.0, 4000.0, 5000.0, 6300.0, 8000.0,
)  # fmt: skip


class ChannelMetrics(BaseModel):
    """One file's channel: codec (and how it was seen) and pass band."""

    codec: str = Field(description="pcm, mulaw, alaw, gsm, mp3, opus, vorbis or adpcm.")
    codec_evidence: str = Field(
        description="subtype, samples (G.711 levels), spectrum (spectral holes), or none."
    )
    spectral_holes: float | None = Field(
        default=None,
        description="Share of empty time-frequency cells in the loud frames (a perceptual "
        "codec's mark); None when the file is too short or narrow to count them.",
    )
    narrowband: bool = Field(description="A steep upper band edge below the Nyquist rate.")
    band_low_hz: float
    band_high_hz: float
    edge_drop_db: float = Field(description="Fall of the long-term spectrum at the upper edge.")
    band_levels_db: list[float | None] = Field(
        description="Long-term level per third-octave band, dB relative to the speech band; "
        "None above the file's Nyquist rate."
    )


def _g711_mulaw() -> np.ndarray:
    """The 256 16-bit values of G.711 μ-law decoding (ITU-T G.711, bias 0x84)."""
    codes = np.arange(256)
    u = ~codes & 0xFF
    exponent = (u >> 4) & 7
    magnitude = (((u & 0x0F) << 3) + 0x84 << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude)


def _g711_alaw() -> np.ndarray:
    """The 256 16-bit values of G.711 A-law decoding (even bits inverted, sign 1 = +)."""
    a = np.arange(256) ^ 0x55
    exponent = (a >> 4) & 7
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(a & 0x80, magnitude, -magnitude)


@lru_cache(maxsize=1)
def _law_members() -> dict[str, np.ndarray]:
    """Per law, a 65536-entry lookup: is this int16 value one of its levels?"""
    out = {}
    for name, values in (("mulaw", _g711_mulaw()), ("alaw", _g711_alaw())):
        member = np.zeros(65536, dtype=bool)
        member[values.astype(np.int64) + 32768] = True
        out[name] = member
    return out


def codec_from_samples(x: np.ndarray) -> str | None:
    """``mulaw`` or ``alaw`` when the samples sit on that law's levels, else None."""
    if len(x) < LAW_MIN_SAMPLES:
        return None
    ints = np.clip(np.rint(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767)
    index = ints.astype(np.int64) + 32768
    for name, member in _law_members().items():
        if float(member[index].mean()) >= LAW_SHARE:
            return name
    return None


def spectral_holes(x: np.ndarray, rate: int, band_high_hz: float | None = None) -> float | None:
    """Share of the cells of the louder half of the active frames, in ``HOLE_BAND_HZ``
    (below 0.9 × ``band_high_hz`` when a band edge was measured), that lie
    ``HOLE_DEPTH_DB`` under the spectral envelope; None with too few frames or bins."""
    magnitude, freqs = active_spectra(x, rate)
    if len(magnitude) < 4:
        return None
    db = 20 * np.log10(np.maximum(magnitude, 1e-10))
    speech = (freqs >= REFERENCE_BAND_HZ[0]) & (freqs <= REFERENCE_BAND_HZ[1])
    level = db[:, speech].max(axis=1)
    loud = db[level >= np.median(level)]
    span = max(round(HOLE_SPAN_HZ / float(freqs[1])), 1)
    envelope = maximum_filter1d(loud, size=2 * span + 1, axis=1, mode="nearest")
    top = min(HOLE_BAND_HZ[1], NYQUIST_MARGIN * float(freqs[-1]))
    if band_high_hz is not None:
        top = min(top, NYQUIST_MARGIN * band_high_hz)
    band = (freqs >= HOLE_BAND_HZ[0]) & (freqs < top)
    if int(band.sum()) < 2 * span:
        return None
    return float(np.mean((loud - envelope)[:, band] < -HOLE_DEPTH_DB))


def long_term_spectrum(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean power of the active frames per bin, in dB relative to the speech band, smoothed
    over ``LTAS_SMOOTH_HZ``; and the bin frequencies."""
    magnitude, freqs = active_spectra(x, rate, frame_seconds=LTAS_FRAME_SECONDS)
    if not len(magnitude):
        return np.full(len(freqs), -120.0), freqs
    power = np.mean(np.square(magnitude, dtype=np.float64), axis=0)
    width = max(round(float(LTAS_SMOOTH_HZ / freqs[1])), 1)
    # Edge-replicated moving average: zero padding would fake a fall at Nyquist.
    padded = np.pad(power, (width // 2, width - 1 - width // 2), mode="edge")
    smooth = np.convolve(padded, np.ones(width) / width, mode="valid")
    db = 10 * np.log10(np.maximum(smooth, 1e-20))
    band = (freqs >= REFERENCE_BAND_HZ[0]) & (freqs <= min(REFERENCE_BAND_HZ[1], freqs[-1]))
    return db - float(np.median(db[band])), freqs


def band_edges(db: np.ndarray, freqs: np.ndarray) -> tuple[float, float, float, bool]:
    """(low edge, high edge, fall at the high edge in dB, narrowband) of a long-term
    spectrum relative to its speech band (as ``long_term_spectrum`` returns it)."""
    step = float(freqs[1])
    width = max(round(EDGE_WIDTH_HZ / step), 1)
    nyquist = float(freqs[-1])
    # Upper edge: the steepest fall over EDGE_WIDTH_HZ starting above 2 kHz.
    last_end = int(NYQUIST_MARGIN * nyquist / step)
    starts = np.arange(int(2000 / step), last_end - width)
    if len(starts):
        falls = db[starts] - db[starts + width]
        best = int(starts[int(np.argmax(falls))])
        drop = float(falls.max())
        # Where the fall crosses half its depth: the edge as a -6 dB point would be read.
        middle = db[best] - drop / 2
        after = np.nonzero(db[best : best + width + 1] <= middle)[0]
        high = float(freqs[best + (int(after[0]) if len(after) else width // 2)])
        above = db[best + width :]
        narrowband = (
            drop >= EDGE_DROP_DB and len(above) > 0 and float(np.mean(above)) <= -STOPBAND_DB
        )
    else:
        drop, high, narrowband = 0.0, nyquist, False
    if not narrowband:
        high = nyquist
    # Lower edge: where the level comes up to within LOW_EDGE_DB of the speech band,
    # searched below 1 kHz (speech itself has little below its pitch, ~100 Hz).
    low_region = np.nonzero((freqs < 1000.0) & (db < -LOW_EDGE_DB))[0]
    low = float(freqs[int(low_region[-1]) + 1]) if len(low_region) else 0.0
    return low, high, drop, narrowband


def band_levels(db: np.ndarray, freqs: np.ndarray) -> list[float | None]:
    """Mean level (dB) in each third-octave band of ``THIRD_OCTAVES_HZ``; None for bands
    that reach past the Nyquist rate or hold no bin."""
    power = 10 ** (db / 10)
    levels: list[float | None] = []
    for centre in THIRD_OCTAVES_HZ:
        low, high = third_octave_edges(centre)
        inside = (freqs >= low) & (freqs < high)
        if high > freqs[-1] or not inside.any():
            levels.append(None)
        else:
            levels.append(10 * math.log10(float(power[inside].mean())))
    return levels


def measure_channel(x: np.ndarray, rate: int, subtype: str) -> ChannelMetrics:
    """The channel of one mono file (samples as decoded, float in [-1, 1])."""
    codec = SUBTYPE_CODECS.get(subtype)
    evidence = "subtype" if codec else "none"
    if codec is None and subtype.startswith("PCM_16"):
        codec = codec_from_samples(x)
        evidence = "samples" if codec else "none"
    db, freqs = long_term_spectrum(x, rate)
    low, high, drop, narrowband = band_edges(db, freqs)
    holes = spectral_holes(x, rate, high if narrowband else None)
    if codec is None and holes is not None and holes >= HOLE_SHARE:
        codec, evidence = "mp3", "spectrum"
    return ChannelMetrics(
        codec=codec or "pcm",
        codec_evidence=evidence,
        spectral_holes=holes,
        narrowband=narrowband,
        band_low_hz=low,
        band_high_hz=high,
        edge_drop_db=drop,
        band_levels_db=band_levels(db, freqs),
    )

"""Per-utterance parameters of the Eq. 3 chain, drawn from a profile with a seeded RNG.

Drawing is separate from applying (``chain.apply_chain``): the parameters are a
pydantic model logged with every output line, and replaying them gives the same
audio. Each utterance gets its own RNG from (seed, source key, copy index), so
results do not depend on sharding, order or resumption.

How the paper's distributions are read (documented choices):

- R: sample rate drawn from the profile's sample-rate distribution; bit depth
  from its subtype distribution: PCM keeps its bits, μ/A-law and narrowband
  codecs (GSM, ADPCM) become 8-bit μ-law companding (their noise floor follows
  the signal like a codec's does), lossy wideband codecs 16-bit PCM.
- F_rev: p_rev = min(1, SNR_REF_DB / μ_SNR): a clean target (μ_SNR = 40 dB)
  reverberates one utterance in eight, a noisy one (μ_SNR ≤ 5 dB) all of them.
  When the profile measured the target's rooms (``profile.reverb``, with
  channelFromTarget), p_rev is the share of its files that read reverberant
  instead, and the simulated rooms take their RT60s from those files
  (``room_rt60_range``).
- F_noise: SNR ~ U(SNR_min, SNR_max) over the profile's characteristic range,
  read as its 5th..95th percentiles so one outlier file does not widen it;
  a random stretch of generated coloured noise 1/f^β, β drawn from
  ``assets.NOISE_BETAS`` (white to pink; the bank is made once per run and
  band-limited by the channel, since noise enters through the same channel),
  or of a user's noise file, or of the noise harvested from the target's
  non-speech stretches (``harvest.py``) when the profile kept enough of it.
- F_lufs: target ~ N(μ_LUFS, σ²_LUFS), clipped to the profile's [min, max].
- F_filt: a rolloff r and a centroid c, each ~ N(μ, σ²) clipped to [p5, p95].
  Type and cutoff are then the ones that bring this utterance's mean rolloff
  (first) and centroid closest to (r, c): audio brighter than the target gets
  a low-pass (a muffled channel), audio with too much low end a high-pass (a
  thin, telephone-like channel), both (a band-pass: the telephone band) when
  that is closer, none when nothing helps (``chain.resolve_filter``; the
  resolved cutoffs are logged). The paper ties the filter to the rolloff
  alone; the centroid is what tells a missing low end apart.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Literal, TypeVar, cast

import numpy as np
from pydantic import BaseModel, Field, computed_field

from marco_trainer.audio.assets import NOISE_BETAS
from marco_trainer.audio.channel import CODECS, SUBTYPE_CODECS, Codec
from marco_trainer.audio.io import SUBTYPE_BITS
from marco_trainer.audio.profile import MetricSummary, Profile
from marco_trainer.audio.snr_calibration import SnrCalibration

SNR_REF_DB = 5.0
#: Speech with its pauses spreads its 50 ms frame levels over 18-30 dB (p10..p90) even
#: at 10-20 dB SNR; a target whose median spread is under this has been compressed.
COMPRESSED_SPREAD_DB = 15.0
#: A target is saturated when its median file has this share of samples on flat tops
#: (features.clipped_share): unclipped speech of any scenario reads 0 (or a few samples
#: at its one peak); an overdriven radio reads 7-9 % of its samples.
CLIPPED_SHARE_GATE = 0.005
#: A target counts as compressed only this much narrower than the chain's uncompressed
#: outputs: the median of 24 utterances' spreads (s.d. about 3 dB) moves by about 0.8.
NOISE_SPREAD_MARGIN_DB = 2.0
#: A lower band edge under this is speech's own low end, not a channel's high-pass.
MIN_BAND_LOW_HZ = 120.0
FILTER_ORDER = 4
#: The measured band's Butterworth order: a channel's edge is steep (48 dB/octave).
CHANNEL_FILTER_ORDER = 8


class ResampleStep(BaseModel):
    sample_rate: int = Field(gt=0, description="Channel rate the audio passes through.")
    encoding: Literal["pcm", "mulaw"]
    bits: int = Field(gt=0)


class ReverbStep(BaseModel):
    rir_index: int = Field(ge=0)
    rt60_s: float | None = Field(
        default=None, description="The simulated room's RT60 (None: a user's RIR file)."
    )
    tail_s: float = Field(
        default=0.0,
        ge=0,
        description="Seconds of the room's decay kept after the utterance (0: cut at its "
        "end). The room's RT60 for rooms made from the target's measured reverberation.",
    )


#: Where the noise of a line came from, when not the generated coloured bank.
NoiseKind = Literal["file", "harvested", "spectrum", "babble"]


class NoiseStep(BaseModel):
    snr_db: float
    source: Literal["coloured", NoiseKind] = Field(
        default="coloured",
        description="harvested: the target's own non-speech stretches; spectrum: noise made "
        "to the target's noise-floor spectrum; babble: source talkers at once "
        "(babbleTalkers); file: a user's noisePath.",
    )
    index: int = Field(default=0, ge=0, description="Noise-bank slope or noise-file index.")
    beta: float | None = Field(default=None, description="Spectral slope 1/f^β (coloured).")
    offset: float = Field(default=0.0, ge=0, le=1, description="Start within the clip (share).")
    reading_db: float | None = Field(
        default=None,
        description="With an SNR calibration: the estimator reading drawn from the target's, "
        "which snr_db (the mix) is chosen to give.",
    )


class LoudnessStep(BaseModel):
    target_lufs: float


class FilterStep(BaseModel):
    """The drawn spectral shape; the cutoffs are resolved against the audio when the chain
    runs (and logged), or taken as given when replaying logged parameters."""

    target_rolloff_hz: float = Field(gt=0)
    target_centroid_hz: float = Field(gt=0)
    resolved: bool = False
    highpass_hz: float | None = Field(default=None, gt=0)
    lowpass_hz: float | None = Field(default=None, gt=0)
    order: int = FILTER_ORDER
    highpass_allowed: bool = Field(
        default=True,
        description="False when the measured channel keeps the target's low end (no band edge "
        "at or above MIN_BAND_LOW_HZ): the shape match may not take it away.",
    )
    lowpass_allowed: bool = Field(
        default=True,
        description="False when the measured channel's equaliser already shapes the top of "
        "the band toward the target's long-term spectrum.",
    )

    # Logged with the cutoffs, so a reader sees the channel at a glance. mypy does not
    # support decorators over @property; this is pydantic's documented form.
    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> str:
        if self.highpass_hz and self.lowpass_hz:
            return "bandpass"
        return "highpass" if self.highpass_hz else "lowpass" if self.lowpass_hz else "none"


class ChannelStep(BaseModel):
    """The target's measured channel, in F_filt's place (a codec is part of the channel).

    The equaliser's gains are resolved against the audio when the chain runs (and
    logged), like the filter's cutoffs; replaying logged parameters takes them as given.
    """

    band_low_hz: float | None = Field(default=None, gt=0, description="High-pass edge.")
    band_high_hz: float | None = Field(default=None, gt=0, description="Low-pass edge.")
    codec: Codec | None = Field(default=None, description="Encode/decode round trip, last.")
    codec_level: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="The codec's compression level (ops.codec_round_trip), chosen by the "
        "augment stage's codec calibration; None: libsndfile's default.",
    )
    eq: bool = Field(default=False, description="Equalise toward the target's spectrum.")
    eq_target_db: list[float | None] | None = Field(
        default=None, description="The target's long-term band levels (dB re speech band)."
    )
    resolved: bool = False
    eq_gains_db: list[float] | None = Field(
        default=None,
        description="Gain per band of THIRD_OCTAVES_HZ: the set's, from the augment stage's "
        "equaliser calibration (eq_calibration); None: flat.",
    )
    clip_share: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Hard clipping after the line's filters: this share of the utterance's "
        "samples ends on flat tops (a saturated stage); None: not clipped.",
    )


class CompressionStep(BaseModel):
    """Dynamic-range compression in F_lufs's place, drawn when the target is compressed:
    the ratio is resolved against the audio so its level spread lands on the drawn one."""

    target_spread_db: float = Field(gt=0)
    resolved: bool = False
    threshold_db: float | None = None
    ratio: float = Field(default=1.0, ge=1)


class DropoutStep(BaseModel):
    """Lost packets, last (after the codec, at the output rate): a Gilbert channel."""

    packet_s: float = Field(gt=0)
    loss: float = Field(ge=0, lt=1)
    burst: float = Field(ge=0, lt=1)
    seed: int = Field(ge=0, description="The chain's draws.")
    packets_lost: int | None = Field(default=None, description="As applied.")


class ChainParams(BaseModel):
    """Everything one output utterance got (logged as its ``augmentation`` field)."""

    chain: Literal["profile"] = "profile"
    output_rate: int
    resample: ResampleStep
    reverb: ReverbStep | None
    noise: NoiseStep
    loudness: LoudnessStep
    filter: FilterStep
    channel: ChannelStep | None = None
    compression: CompressionStep | None = None
    dropouts: DropoutStep | None = None
    speed: float | None = Field(
        default=None, description="Speed perturbation: played this many times faster first."
    )


def utterance_rng(seed: int, key: str, copy: int) -> np.random.Generator:
    """An RNG that depends only on the run seed, the source's key and the copy index."""
    digest = hashlib.sha256(f"{seed}\0{key}\0{copy}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


_Key = TypeVar("_Key")


def _categorical(rng: np.random.Generator, counts: dict[_Key, int]) -> _Key:
    """A key drawn with probability ∝ its count (plain Python: the dicts are tiny)."""
    keys = list(counts)
    cumulative = list(accumulate(counts[k] for k in keys))
    return keys[bisect_right(cumulative, rng.random() * cumulative[-1])]


def _clip(value: float, low: float, high: float) -> float:
    return min(max(float(value), low), high)


def _normal_in_range(rng: np.random.Generator, summary: MetricSummary) -> float:
    """N(μ, σ²) clipped to the characteristic range p5..p95."""
    low, high = summary.percentile(5), summary.percentile(95)
    return _clip(rng.normal(summary.mean, summary.std), low, high)


def encoding_for(
    subtype: str, bits: int, codecs_in_channel: bool = False
) -> tuple[Literal["pcm", "mulaw"], int]:
    """R's encoding. With a measured channel the codec is the channel step's job
    (the real codec, not a stand-in), so R keeps 16-bit PCM for codec subtypes."""
    if codecs_in_channel and subtype in SUBTYPE_CODECS:
        return "pcm", 16
    if subtype in ("ULAW", "ALAW", "GSM610", "IMA_ADPCM", "MS_ADPCM") or subtype.startswith("G72"):
        return "mulaw", 8
    if bits == 0:
        return "pcm", 16
    return "pcm", min(bits, 24)


def draw_channel(
    profile: Profile,
    rng: np.random.Generator,
    mp3_level: float | None = None,
    eq_gains_db: list[float] | None = None,
) -> ChannelStep | None:
    """The measured channel: the band when most files show it, a codec drawn with the
    files' detected shares (pcm: none; an MP3 at ``mp3_level``, the codec calibration's),
    the equaliser whenever the spectrum was measured, with the set's ``eq_gains_db``
    (the equaliser calibration's; None: flat, as that calibration runs it), and, when
    the target is clipped, a clipped share ~ N(μ, σ²) within p5..p95 of the target's."""
    measured = profile.channel
    if measured is None:
        return None
    codec = str(_categorical(rng, measured.codec)) if measured.codec else "pcm"
    if codec != "pcm" and codec not in CODECS:
        raise ValueError(f"profile channel.codec: unknown codec {codec!r} (one of {CODECS})")
    low = measured.band_low_hz if measured.narrowband else None
    clip_share = None
    if target_is_clipped(profile):
        # Drawn only then: a target that is not clipped keeps the draws it always had.
        clip_share = _normal_in_range(rng, profile.metric("clipped_share"))
    return ChannelStep(
        band_low_hz=low if low and low >= MIN_BAND_LOW_HZ else None,
        band_high_hz=measured.band_high_hz if measured.narrowband else None,
        codec=None if codec == "pcm" else cast("Codec", codec),
        codec_level=mp3_level if codec == "mp3" else None,
        eq=True,
        eq_target_db=measured.band_levels_db,
        eq_gains_db=eq_gains_db,
        clip_share=clip_share or None,  # p5 of the shares may be 0: then not clipped
    )


def target_is_clipped(profile: Profile) -> bool:
    """The median target file has ``CLIPPED_SHARE_GATE`` of its samples on flat tops."""
    if "clipped_share" not in profile.metrics:
        return False
    return profile.metric("clipped_share").percentile(50) >= CLIPPED_SHARE_GATE


def target_is_compressed(profile: Profile, uncompressed_spread_db: float | None = None) -> bool:
    """The gate of ``draw_compression`` (see there)."""
    if "level_spread_db" not in profile.metrics:
        return False
    gate = COMPRESSED_SPREAD_DB
    if uncompressed_spread_db is not None:
        gate = min(gate, uncompressed_spread_db - NOISE_SPREAD_MARGIN_DB)
    return profile.metric("level_spread_db").percentile(50) < gate


def draw_compression(
    profile: Profile, rng: np.random.Generator, uncompressed_spread_db: float | None = None
) -> CompressionStep | None:
    """When the target is compressed (median spread under ``COMPRESSED_SPREAD_DB``), a
    spread ~ N(μ, σ²) within p5..p95 of the target's, resolved (maybe to ratio 1) in the
    chain, so a source already as narrow as drawn is left alone.

    Why a fixed gate: the noise step already narrows the spread (it fills the pauses),
    and spreads drawn independently of the utterance would then squeeze the wide half
    of a set that already matched; only a target narrower than uncompressed speech
    ever gets there, and that is what a compressing channel looks like.

    A noisy target gets there without a compressor (the car scenario at 0-8 dB SNR:
    median 9.5 dB). With ``uncompressed_spread_db``, what this chain's noise alone
    leaves (``SnrCalibration``), the gate is that less ``NOISE_SPREAD_MARGIN_DB`` when
    lower: the calibration can only take compression away, never add it."""
    if not target_is_compressed(profile, uncompressed_spread_db):
        return None
    return CompressionStep(
        target_spread_db=max(_normal_in_range(rng, profile.metric("level_spread_db")), 1.0)
    )


def draw_dropouts(profile: Profile, rng: np.random.Generator) -> DropoutStep | None:
    """Lost packets for as many utterances as the target has files with them, at its loss
    and burstiness; no draw at all when the profile saw none (older draws unchanged)."""
    lossy = profile.dropouts
    if lossy is None or rng.random() >= lossy.share:
        return None
    return DropoutStep(
        packet_s=lossy.packet_s,
        loss=min(lossy.loss, 0.5),
        burst=min(lossy.burst, 0.95),
        seed=int(rng.integers(2**31)),
    )


def reverb_probability(mean_snr_db: float) -> float:
    return min(1.0, SNR_REF_DB / max(mean_snr_db, SNR_REF_DB))


def measured_reverb_probability(profile: Profile) -> float:
    """p_rev: the share of the target's files that read reverberant when the profile
    measured it (channelFromTarget), else the paper's reading from μ_SNR."""
    if profile.reverb is not None:
        return profile.reverb.reverberant_share
    return reverb_probability(profile.metric("snr_db").mean)


#: Simulated rooms stay within these RT60s (s) whatever a profile reads.
ROOM_RT60_BOUNDS = (0.2, 2.0)


def room_rt60_range(profile: Profile) -> tuple[float, float] | None:
    """RT60s (s) of the rooms to simulate: p10..p90 of the target's reverberant files;
    None when the profile has no reverberant file (then the paper's RT60_RANGE)."""
    reverb = profile.reverb
    if reverb is None or reverb.reverberant_rt60_s is None:
        return None
    low_bound, high_bound = ROOM_RT60_BOUNDS
    low = min(max(reverb.reverberant_rt60_s.percentile(10), low_bound), high_bound)
    high = min(max(reverb.reverberant_rt60_s.percentile(90), low), high_bound)
    return low, high


def draw_params(
    profile: Profile,
    rng: np.random.Generator,
    output_rate: int,
    num_rirs: int = 0,
    num_noises: int = 0,
    noise_source: NoiseKind = "file",
    rir_rt60s: list[float] | None = None,
    speed_factors: Sequence[float] = (),
    snr_calibration: SnrCalibration | None = None,
    mp3_level: float | None = None,
    eq_gains_db: list[float] | None = None,
) -> ChainParams:
    rate = int(_categorical(rng, profile.sample_rate))
    subtype = str(_categorical(rng, profile.subtype))
    encoding, bits = encoding_for(
        subtype, SUBTYPE_BITS.get(subtype, 0), codecs_in_channel=profile.channel is not None
    )

    snr = profile.metric("snr_db")
    reverb = None
    if num_rirs and rng.random() < measured_reverb_probability(profile):
        index = int(rng.integers(num_rirs))
        rt60 = rir_rt60s[index] if rir_rt60s else None
        # A recording of the utterance in the target's room goes on for the room's decay
        # after the last word (the meeting target: files 1.2 s longer than their speech).
        # Cut at the last word, the tail filled the copy's last pauses instead: the
        # estimators read reverberant copies 4 dB noisier and 5 dB narrower in level
        # than the true channel's, so the SNR calibration added almost no noise.
        tail = rt60 if rt60 is not None and profile.reverb is not None else 0.0
        reverb = ReverbStep(rir_index=index, rt60_s=rt60, tail_s=tail)

    low, high = snr.percentile(5), snr.percentile(95)
    noise_snr = float(rng.uniform(low, high)) if high > low else low
    reading = None
    if snr_calibration is not None:
        # The draw is a reading of the target's; mix at what reads as it (no extra draw).
        reading, noise_snr = noise_snr, snr_calibration.mixed_for(noise_snr)
    if num_noises:
        noise = NoiseStep(
            snr_db=noise_snr,
            source=noise_source,
            index=int(rng.integers(num_noises)),
            offset=float(rng.random()),
            reading_db=reading,
        )
    else:
        k = int(rng.integers(len(NOISE_BETAS)))
        noise = NoiseStep(
            snr_db=noise_snr,
            index=k,
            beta=NOISE_BETAS[k],
            offset=float(rng.random()),
            reading_db=reading,
        )

    lufs = profile.metric("lufs")
    target = _clip(rng.normal(lufs.mean, lufs.std), lufs.min, lufs.max)

    filt = FilterStep(
        target_rolloff_hz=_normal_in_range(rng, profile.metric("rolloff_hz")),
        target_centroid_hz=_normal_in_range(rng, profile.metric("centroid_hz")),
    )

    channel = draw_channel(profile, rng, mp3_level, eq_gains_db)
    if channel is not None and channel.band_low_hz is None:
        # The target's own low end is intact (car rumble: 43 % of its energy under 200 Hz),
        # and F_filt's high-pass, matching a centroid the noise moved, removed most of it.
        filt = filt.model_copy(update={"highpass_allowed": False})
    if channel is not None and channel.eq:
        # The equaliser has matched the long-term spectrum band by band. A low-pass can
        # only lower a copy's rolloff toward a draw made without regard to it, so every
        # copy drawn under its own was cut, and the set's top fell under the target's
        # (car: 363 of 400 low-passed at 2.3-5.7 kHz, 6 kHz 21 dB under the target).
        filt = filt.model_copy(update={"lowpass_allowed": False})
    params = ChainParams(
        channel=channel,
        compression=draw_compression(
            profile, rng, snr_calibration.uncompressed_spread_db if snr_calibration else None
        ),
        dropouts=draw_dropouts(profile, rng),
        output_rate=output_rate,
        resample=ResampleStep(sample_rate=rate, encoding=encoding, bits=bits),
        reverb=reverb,
        noise=noise,
        loudness=LoudnessStep(target_lufs=target),
        filter=filt,
    )
    if not speed_factors:
        return params
    # Drawn last, so that every other draw is the same with speed perturbation or without.
    speed = float(speed_factors[int(rng.integers(len(speed_factors)))])
    return params.model_copy(update={"speed": speed})

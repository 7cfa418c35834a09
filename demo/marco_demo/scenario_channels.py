"""The benchmark scenarios' target channels: parameters, and clean file → target file.

One pydantic model per channel holds everything needed to replay one
utterance (its ``seed`` drives every random draw), the way
:class:`marco_demo.phone_line.ChannelParams` does for the demo. The signal work
is in :mod:`marco_demo.acoustics`; this module reads and writes the files and
runs sox for the one thing numpy cannot do, the low-bitrate codec.

- ``meeting``: a far talker in a reverberant room (RT60 0.5–1.1 s, 1.5–4 m from
  the table microphone) over distant, equally reverberant babble; 16 kHz.
- ``car``: a hands-free microphone in a cabin: engine drone and road rumble
  under 400 Hz at 0–8 dB SNR, a cabin boom, a 100–7000 Hz microphone; 16 kHz.
- ``voip``: MP3 at 12 or 16 kbit/s (LAME low-passes it near 5 kHz) and bursty
  20 ms packet loss with repeat-then-silence concealment; 16 kHz.
- ``radio``: a walkie-talkie: 300–2400 or 2600 Hz, hiss, a transmitter overdriven 8–16 dB
  clipping, a squelch tail; 8 kHz.
- ``clinic``: a handheld dictation recorder on a hospital ward: the lips at the
  microphone (low end lifted), ventilation and bedside-monitor beeps at 10–20 dB SNR,
  automatic gain control that raises the pauses, 4-bit IMA ADPCM at 11.025 kHz
  (stored as 16-bit PCM: the file's subtype does not tell).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, Field
from scipy import signal

from marco_demo import acoustics
from marco_demo.phone_line import run_sox

SCENARIO_RATE = 16000
RADIO_RATE = 8000
CLINIC_RATE = 11025


class MeetingChannel(BaseModel):
    kind: Literal["meeting"] = "meeting"
    rt60_s: float = Field(gt=0, description="Reverberation time of the room.")
    room_m: tuple[float, float, float] = Field(description="Width, depth, height.")
    distance_m: float = Field(gt=0, description="Talker to microphone.")
    babble_snr_db: float = Field(description="Speech to babble power ratio.")
    babble: list[str] = Field(min_length=1, description="Babble clips (relative paths).")
    seed: int = Field(ge=0)


class CarChannel(BaseModel):
    kind: Literal["car"] = "car"
    rpm: float = Field(gt=0, description="Engine speed; firing frequency rpm / 30.")
    engine_share: float = Field(ge=0, le=1, description="Engine part of the noise power.")
    snr_db: float
    resonance_hz: float = Field(gt=0, description="Cabin boom frequency.")
    boom_db: float = Field(ge=0)
    seed: int = Field(ge=0)


class VoipChannel(BaseModel):
    kind: Literal["voip"] = "voip"
    bitrate_kbps: int = Field(gt=0, description="MP3 bitrate.")
    loss: float = Field(ge=0, lt=1, description="Share of 20 ms packets lost.")
    burst: float = Field(ge=0, lt=1, description="Chance a loss continues.")
    seed: int = Field(ge=0)


class RadioChannel(BaseModel):
    kind: Literal["radio"] = "radio"
    low_hz: float = Field(gt=0)
    high_hz: float = Field(gt=0, lt=RADIO_RATE / 2)
    snr_db: float
    drive_db: float = Field(ge=0, description="Transmitter overdrive before clipping.")
    tail_s: float = Field(ge=0, description="Squelch tail length.")
    seed: int = Field(ge=0)


class ClinicChannel(BaseModel):
    kind: Literal["clinic"] = "clinic"
    snr_db: float = Field(description="Speech to ward noise (ventilation and beeps).")
    beep_hz: float = Field(gt=0, lt=CLINIC_RATE / 2, description="Monitor tone.")
    beep_share: float = Field(ge=0, le=1, description="Beeps' part of the noise power.")
    proximity_db: float = Field(ge=0, description="Low-end lift of a close-held microphone.")
    agc_max_gain_db: float = Field(ge=0, description="Most the recorder raises a pause.")
    seed: int = Field(ge=0)


Channel = Annotated[
    MeetingChannel | CarChannel | VoipChannel | RadioChannel | ClinicChannel,
    Field(discriminator="kind"),
]


def output_rate(channel: Channel) -> int:
    if isinstance(channel, RadioChannel):
        return RADIO_RATE
    return CLINIC_RATE if isinstance(channel, ClinicChannel) else SCENARIO_RATE


def sox_round_trip(audio: np.ndarray, rate: int, coded_name: str, *encode: str) -> np.ndarray:
    """Encode with sox (``encode``: its output options, the container from ``coded_name``)
    and decode again to 16-bit PCM at ``rate``."""
    with tempfile.TemporaryDirectory() as tmp:
        clean, coded, decoded = (Path(tmp) / n for n in ("in.wav", coded_name, "out.wav"))
        sf.write(clean, audio.astype(np.float32), rate, subtype="FLOAT")
        run_sox(str(clean), *encode, str(coded))
        run_sox(str(coded), "-r", str(rate), "-b", "16", "-e", "signed-integer", str(decoded))
        out, _ = sf.read(decoded, dtype="float64")
    return np.asarray(out)


def mp3_round_trip(audio: np.ndarray, rate: int, bitrate_kbps: int) -> np.ndarray:
    """Encode to MP3 at ``bitrate_kbps`` and decode again (sox with LAME)."""
    return sox_round_trip(audio, rate, "line.mp3", "-C", str(bitrate_kbps))


def adpcm_round_trip(audio: np.ndarray, rate: int) -> np.ndarray:
    """Encode as 4-bit IMA ADPCM at ``rate`` and decode again (sox)."""
    return sox_round_trip(audio, rate, "adpcm.wav", "-e", "ima-adpcm", "-b", "4")


def _babble(
    channel: MeetingChannel, root: Path, length: int, rng: np.random.Generator
) -> np.ndarray:
    """Several distant talkers at once: each clip looped from a random offset, then summed."""
    mixture = np.zeros(length)
    for clip in channel.babble:
        talk, _ = sf.read(root / clip, dtype="float64")
        talk = np.roll(np.resize(talk, length), int(rng.integers(0, max(talk.size, 1))))
        mixture += talk / (np.sqrt(acoustics.power(talk)) + 1e-12)
    return mixture


def meeting(audio: np.ndarray, channel: MeetingChannel, root: Path) -> np.ndarray:
    rng = np.random.default_rng(channel.seed)
    rir = acoustics.room_impulse_response(
        SCENARIO_RATE, channel.rt60_s, channel.room_m, channel.distance_m, rng
    )
    wet = acoustics.reverberate(audio, rir)
    # The other talkers sit farther away in the same room: their own, longer path.
    far = acoustics.room_impulse_response(
        SCENARIO_RATE, channel.rt60_s, channel.room_m, channel.distance_m * 1.5, rng
    )
    babble = acoustics.reverberate(_babble(channel, root, wet.size, rng), far)[: wet.size]
    return acoustics.mix_at_snr(wet, babble, channel.babble_snr_db)


def car(audio: np.ndarray, channel: CarChannel) -> np.ndarray:
    rng = np.random.default_rng(channel.seed)
    n = audio.size
    share = channel.engine_share
    noise = np.sqrt(share) * acoustics.engine_noise(
        n, SCENARIO_RATE, channel.rpm / 30, rng
    ) + np.sqrt(1 - share) * acoustics.road_noise(n, SCENARIO_RATE, rng)
    noisy = acoustics.mix_at_snr(audio, noise, channel.snr_db)
    boomy = acoustics.cabin_eq(noisy, SCENARIO_RATE, channel.resonance_hz, channel.boom_db)
    # The hands-free microphone's band: it keeps the rumble, it drops the air above 7 kHz.
    return acoustics.band_pass(boomy, SCENARIO_RATE, 40.0, 7000.0)


def voip(audio: np.ndarray, channel: VoipChannel) -> np.ndarray:
    rng = np.random.default_rng(channel.seed)
    coded = mp3_round_trip(acoustics.peak_normalise(audio), SCENARIO_RATE, channel.bitrate_kbps)
    lossy, _ = acoustics.packet_loss(coded, SCENARIO_RATE, channel.loss, channel.burst, rng)
    return lossy


def radio(audio: np.ndarray, channel: RadioChannel) -> np.ndarray:
    rng = np.random.default_rng(channel.seed)
    noisy = acoustics.mix_at_snr(audio, acoustics.hiss(audio.size, rng), channel.snr_db)
    narrow = signal.resample_poly(noisy, RADIO_RATE, SCENARIO_RATE)
    # Microphone filter first, then the overdriven stage: its flat tops reach the listener.
    clipped = acoustics.hard_clip(
        acoustics.band_pass(narrow, RADIO_RATE, channel.low_hz, channel.high_hz), channel.drive_db
    )
    tail = acoustics.squelch_tail(np.zeros(0), RADIO_RATE, channel.tail_s, 0.3, rng)
    return np.concatenate(
        [clipped, acoustics.band_pass(tail, RADIO_RATE, channel.low_hz, channel.high_hz)]
    )


def clinic(audio: np.ndarray, channel: ClinicChannel) -> np.ndarray:
    rng = np.random.default_rng(channel.seed)
    near = acoustics.close_talk(audio, SCENARIO_RATE, channel.proximity_db)
    n, share = near.size, channel.beep_share
    # Ventilation: pink noise without the air above 2 kHz; the beeps on top of it.
    vents = acoustics.band_pass(acoustics.pink_noise(n, rng), SCENARIO_RATE, 40.0, 2000.0)
    vents /= np.sqrt(acoustics.power(vents)) + 1e-12
    beeps = acoustics.monitor_beeps(n, SCENARIO_RATE, channel.beep_hz, rng.uniform(0.8, 1.2), rng)
    noise = np.sqrt(share) * beeps + np.sqrt(1 - share) * vents
    ward = acoustics.mix_at_snr(near, noise, channel.snr_db)
    levelled = acoustics.automatic_gain(ward, SCENARIO_RATE, channel.agc_max_gain_db)
    # 16000 -> 11025 = 441 / 640; resample_poly's filter is the recorder's anti-alias filter.
    narrow = signal.resample_poly(levelled, 441, 640)
    return adpcm_round_trip(acoustics.peak_normalise(narrow), CLINIC_RATE)


def apply_channel(source: Path, target: Path, channel: Channel, root: Path) -> Path:
    """Pass ``source`` (clean, 16 kHz mono) through ``channel`` into ``target`` (16-bit PCM)."""
    audio, rate = sf.read(source, dtype="float64", always_2d=True)
    if rate != SCENARIO_RATE:
        raise ValueError(f"{source}: expected {SCENARIO_RATE} Hz, got {rate}")
    mono = audio.mean(axis=1)
    if isinstance(channel, MeetingChannel):
        out = meeting(mono, channel, root)
    elif isinstance(channel, CarChannel):
        out = car(mono, channel)
    elif isinstance(channel, VoipChannel):
        out = voip(mono, channel)
    elif isinstance(channel, ClinicChannel):
        out = clinic(mono, channel)
    else:
        out = radio(mono, channel)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial.wav")
    sf.write(partial, acoustics.peak_normalise(out), output_rate(channel), subtype="PCM_16")
    partial.replace(target)
    return target

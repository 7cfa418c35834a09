"""A perceptual codec found in decoded PCM by its spectral holes, and the chain's MP3 set
to the bitrate the target had. The coded targets are made by sox's own MP3 encoder
(LAME), not by the libsndfile encoder the chain uses; bitrates are read back from the
size of the encoded file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from marco_trainer.audio import ops
from marco_trainer.audio.assets import Assets
from marco_trainer.audio.chain import apply_chain
from marco_trainer.audio.channel import HOLE_SHARE, measure_channel, spectral_holes
from marco_trainer.audio.codec_calibration import calibrate_mp3
from marco_trainer.audio.features import measure
from marco_trainer.audio.io import read_audio
from marco_trainer.audio.params import draw_params, utterance_rng
from marco_trainer.audio.profile import build_profile


@pytest.fixture(scope="module")
def sox_mp3(speech, audio_dir, run_sox):
    """The speech through sox's MP3 encoder at 16 and 64 kbit/s, decoded to 16-bit PCM."""
    out = {}
    for kbps in (16, 64):
        coded = audio_dir / f"speech-{kbps}k.mp3"
        run_sox(str(speech), "-C", str(kbps), str(coded))
        out[kbps] = audio_dir / f"speech-{kbps}k.wav"
        run_sox(str(coded), "-r", "16000", "-e", "signed-integer", "-b", "16", str(out[kbps]))
    return out


def _measured(path):
    data, info = read_audio(path)
    return measure(str(path), data, info)


def _kbps(audio: np.ndarray, rate: int, level: float) -> float:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="MP3", subtype="MPEG_LAYER_III",
             compression_level=level, bitrate_mode="CONSTANT")  # fmt: skip
    return len(buffer.getvalue()) * 8 / (len(audio) / rate) / 1000


def test_a_low_bitrate_mp3_decoded_to_pcm_is_found_by_its_holes(sox_mp3, speech):
    coded = _measured(sox_mp3[16]).channel
    assert coded is not None
    assert (coded.codec, coded.codec_evidence) == ("mp3", "spectrum")
    assert coded.spectral_holes is not None and coded.spectral_holes >= HOLE_SHARE
    clean = _measured(speech).channel
    assert clean is not None and clean.codec == "pcm"
    assert clean.spectral_holes is not None and clean.spectral_holes < HOLE_SHARE / 4


def test_noise_and_a_phone_line_are_not_taken_for_holes(speech_samples):
    x, rate = speech_samples
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(len(x)).astype(np.float32)
    noisy = x + noise * np.sqrt(np.mean(x**2) / np.mean(noise**2) / 10)  # 10 dB SNR
    assert measure_channel(noisy, rate, "PCM_16").codec == "pcm"
    # G.711 leaves its levels, not holes: still found as μ-law, by its samples.
    line, _ = ops.codec_round_trip(x, rate, "mulaw")
    ints = np.round(np.clip(line, -1, 1) * 32767) / 32768
    assert measure_channel(ints.astype(np.float32), rate, "PCM_16").codec == "mulaw"


def test_the_calibration_finds_the_bitrate_sox_coded_the_target_at(sox_mp3, speech_samples):
    x, rate = speech_samples
    chosen = {}
    for kbps, path in sox_mp3.items():
        target, _ = sf.read(path, dtype="float32")
        holes = spectral_holes(target, rate)
        assert holes is not None
        calibration = calibrate_mp3([(x, rate)], holes)
        assert calibration is not None
        chosen[kbps] = _kbps(x, rate, calibration.level)
    # libsndfile steps through MPEG-2's rates (8, 16, 24, 32, 40, 48, 56, 64, 80 ...).
    assert 12 <= chosen[16] <= 24
    assert chosen[64] >= 40


def test_the_profiles_mp3_level_reaches_the_copies(sox_mp3, speech_samples):
    profile = build_profile([_measured(sox_mp3[16]), _measured(sox_mp3[16])])
    assert profile.channel is not None and profile.channel.codec == {"mp3": 2}
    x, rate = speech_samples
    target_holes = profile.channel.mp3_spectral_holes
    assert target_holes is not None
    calibration = calibrate_mp3([(x, rate)], target_holes)
    assert calibration is not None
    params = draw_params(profile, utterance_rng(0, "a", 0), rate, mp3_level=calibration.level)
    assert params.channel is not None
    assert (params.channel.codec, params.channel.codec_level) == ("mp3", calibration.level)
    out, out_rate, applied = apply_chain(x, rate, params, Assets())
    assert applied.channel is not None and applied.channel.codec_level == calibration.level
    holes = spectral_holes(out, out_rate)
    default_channel = params.channel.model_copy(update={"codec_level": None})
    default, _, _ = apply_chain(
        x, rate, params.model_copy(update={"channel": default_channel}), Assets()
    )
    default_holes = spectral_holes(default, out_rate)
    assert holes is not None and default_holes is not None
    # The calibrated copy is as holed as the target (within a factor of two); the
    # libsndfile default's is not.
    assert target_holes / 2 <= holes <= target_holes * 2
    assert default_holes < target_holes / 2

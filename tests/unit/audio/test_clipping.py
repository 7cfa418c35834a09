"""A saturated channel: the profile's clipped share, the gate, and the chain's clipping.

The expectations are counted here, independently of the code under test: samples at
(or within a hair of) the peak after sox or numpy clipped them, not the measure's own
run-length rule.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from marco_trainer.audio import chain
from marco_trainer.audio.assets import Assets
from marco_trainer.audio.chain import apply_chain
from marco_trainer.audio.features import clipped_share, measure
from marco_trainer.audio.io import read_audio
from marco_trainer.audio.params import (
    CLIPPED_SHARE_GATE,
    ChannelStep,
    draw_params,
    target_is_clipped,
    utterance_rng,
)
from marco_trainer.audio.profile import build_profile, without_measured_channel


@pytest.mark.parametrize("gain_db", [6.0, 12.0])
def test_speech_that_sox_drove_into_full_scale_reads_its_clipped_share(
    speech_samples, audio_dir, run_sox, gain_db
):
    x, rate = speech_samples
    loud = audio_dir / "loud.wav"
    sf.write(loud, 0.99 * x / np.max(np.abs(x)), rate, subtype="FLOAT")
    clipped = audio_dir / f"clipped-{gain_db:g}.wav"
    # sox clips what the gain pushes past full scale when it writes 16-bit PCM.
    run_sox(str(loud), "-b", "16", "-e", "signed-integer", str(clipped), "gain", f"{gain_db:g}")
    y, _ = sf.read(clipped, dtype="float64")
    expected = float(np.mean(np.abs(y) >= np.max(np.abs(y)) - 1e-4))  # the plateaus
    assert expected > 0.002
    # Runs shorter than three samples are not counted: a little under, never over.
    assert 0.9 * expected <= clipped_share(y) <= expected + 1e-9
    assert clipped_share(x) < 0.001  # the same speech, never clipped


def test_saturation_leaves_the_drawn_share_of_samples_on_flat_tops(speech_samples):
    x, rate = speech_samples
    for share in (0.02, 0.08, 0.2):
        y, out_rate = chain.saturation(x, rate, ChannelStep(clip_share=share))
        assert out_rate == rate
        flat = float(np.mean(np.abs(y) >= np.max(np.abs(y)) * (1 - 1e-6)))
        assert flat == pytest.approx(share, abs=0.003)
        # Hard clipping then the peak restored: a lower crest factor, nothing else moved.
        assert np.max(np.abs(y)) == pytest.approx(np.max(np.abs(x)), rel=1e-5)
    assert chain.saturation(x, rate, ChannelStep())[0] is x


def _records(phone_files, shares):
    """Measured phone-line files (so the profile has a channel), their clipped share set."""
    records = []
    for path, share in zip(
        (phone_files["mulaw"], phone_files["alaw"], phone_files["wide16"], phone_files["mulaw"]),
        shares,
        strict=True,
    ):
        data, info = read_audio(path)
        records.append(measure(str(path), data, info).model_copy(update={"clipped_share": share}))
    return records


def test_clipping_is_drawn_only_for_a_clipped_target_and_applied(phone_files, speech_samples):
    clipped = build_profile(_records(phone_files, [0.04, 0.06, 0.08, 0.10]))
    clean = build_profile(_records(phone_files, [0.0, 0.0, 0.0001, 0.0]))
    assert target_is_clipped(clipped) and not target_is_clipped(clean)
    assert CLIPPED_SHARE_GATE > 0.0001
    summary = clipped.metric("clipped_share")
    low, high = summary.percentile(5), summary.percentile(95)
    x, rate = speech_samples
    for i in range(12):
        params = draw_params(clipped, utterance_rng(0, str(i), 0), 8000)
        assert params.channel is not None and params.channel.clip_share is not None
        assert low <= params.channel.clip_share <= high
        # The unclipped target draws everything else as before: the share is drawn last
        # of the channel, and only for a clipped target (these lines draw no compression
        # or dropouts after it, so here nothing else differs at all).
        unclipped = draw_params(clean, utterance_rng(0, str(i), 0), 8000)
        assert unclipped.channel is not None and unclipped.channel.clip_share is None
        assert params.compression is None and params.dropouts is None
        assert (
            params.model_copy(
                update={"channel": params.channel.model_copy(update={"clip_share": None})}
            )
            == unclipped
        )
    params = draw_params(clipped, utterance_rng(0, "applied", 0), 8000)
    assert params.channel is not None
    # The codec (μ-law or A-law here) would requantise the flat tops; leave it out.
    params = params.model_copy(
        update={"channel": params.channel.model_copy(update={"codec": None})}
    )
    out, out_rate, applied = apply_chain(x, rate, params, Assets())
    assert out_rate == 8000 and applied.channel is not None
    flat = float(np.mean(np.abs(out) >= np.max(np.abs(out)) * (1 - 1e-4)))
    # Measured at the output, after the gain: the drawn share, give or take the length
    # the chain restores (the copy keeps the source's length; pauses are not clipped).
    assert flat == pytest.approx(applied.channel.clip_share, rel=0.25)


def test_the_paper_chain_reads_no_clipping(phone_files):
    profile = build_profile(_records(phone_files, [0.04, 0.06, 0.08, 0.10]))
    plain = without_measured_channel(profile)
    assert "clipped_share" not in plain.metrics and not target_is_clipped(plain)

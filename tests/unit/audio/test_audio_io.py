"""Bad files are refused with a reason, never a crash."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import soundfile as sf

from marco_trainer.audio.io import AudioRejected, find_audio_files, load_mono, probe


def _reason(path) -> str:
    with pytest.raises(AudioRejected) as caught:
        load_mono(path)
    return caught.value.reason


def test_each_kind_of_bad_file_has_its_reason(tmp_path):
    rate = 16000
    t = np.arange(rate) / rate
    tone = 0.3 * np.sin(2 * np.pi * 300 * t)
    (tmp_path / "text.wav").write_text("this is not audio")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(40)))
    sf.write(tmp_path / "empty.wav", np.zeros(0), rate)
    sf.write(tmp_path / "silent.wav", np.zeros(rate), rate)
    sf.write(tmp_path / "tiny.wav", tone[:100], rate)
    sf.write(tmp_path / "clipped.wav", np.sign(tone), rate)
    sf.write(tmp_path / "dc.wav", np.full(rate, 0.5), rate)  # a constant: no sound at all
    sf.write(tmp_path / "8hz.wav", tone, 8)  # a broken header's rate: 2000 s of "audio"
    expected = {
        "text.wav": "unsupported_format",
        "corrupt.wav": {"unsupported_format", "unreadable"},
        "empty.wav": "empty",
        "silent.wav": "silent",
        "tiny.wav": "too_short",
        "clipped.wav": "clipped",
        "missing.wav": "missing",
        "dc.wav": "dc_only",
        "8hz.wav": "sample_rate_too_low",
    }
    for name, reason in expected.items():
        got = _reason(tmp_path / name)
        assert got in reason if isinstance(reason, set) else got == reason, name


def test_stereo_with_agreeing_channels_is_mixed_to_mono(tmp_path):
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)
    sf.write(tmp_path / "stereo.wav", np.stack([tone, 0.8 * tone], axis=1), rate)
    mono, info = load_mono(tmp_path / "stereo.wav")
    assert info.channels == 2 and mono.shape == (rate,)
    assert np.allclose(mono, 0.9 * tone, atol=1e-3)


def test_a_phase_inverted_stereo_file_is_the_tone_not_near_silence(tmp_path):
    """The mean of a channel and its inverse is zero: every reader takes a channel instead."""
    from marco_trainer.model_audio import load_audio

    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(rate) / rate)
    # The right channel inverted and a little quieter: the left one is the strongest.
    sf.write(tmp_path / "antiphase.wav", np.stack([tone, -0.9 * tone], axis=1), rate)
    rms = 0.3 / np.sqrt(2)  # a sine's RMS, the left channel's
    trained = load_audio(tmp_path / "antiphase.wav", rate)  # train and evaluate read this way
    assert np.sqrt(np.mean(np.square(trained))) == pytest.approx(rms, rel=0.01)
    mono, info = load_mono(tmp_path / "antiphase.wav")  # profile and augment this way
    assert info.channels == 2
    assert np.allclose(mono, tone, atol=1e-3)


def test_directory_scan_is_recursive_and_audio_only(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.wav", "a/b/y.flac", "z.ogg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)] == [
        "a/b/y.flac",
        "a/x.wav",
        "z.ogg",
    ]


def test_a_fifo_or_a_directory_named_wav_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    (tmp_path / "folder.wav").mkdir()
    reasons: dict[str, str] = {}

    def refuse(name: str) -> None:
        try:
            probe(tmp_path / name)
        except AudioRejected as rejected:
            reasons[name] = rejected.reason

    # Opening a FIFO for reading blocks until a writer comes: probe in a thread, and
    # if it is stuck there, be its writer so that the thread (and the test) ends.
    worker = threading.Thread(target=refuse, args=("pipe.wav",), daemon=True)
    worker.start()
    worker.join(timeout=5)
    hung = worker.is_alive()
    if hung:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
    refuse("folder.wav")
    assert not hung, "probe opened the FIFO and waited for a writer"
    assert reasons == {"pipe.wav": "not_regular_file", "folder.wav": "not_regular_file"}

import numpy as np
import pytest

from marco_demo.phone_line import PEAK_LIMIT, add_noise, pink_noise


def test_noise_is_mixed_at_the_requested_snr_and_replayable():
    rng = np.random.default_rng(0)
    speech = 0.1 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)
    noisy = add_noise(speech, 12.0, np.random.default_rng(5))
    noise = noisy - speech
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(noise**2))
    assert snr == pytest.approx(12.0, abs=0.05)
    assert np.array_equal(noisy, add_noise(speech, 12.0, np.random.default_rng(5)))
    assert not np.array_equal(noisy, add_noise(speech, 12.0, rng))


def test_pink_noise_falls_with_frequency_and_loud_input_keeps_headroom():
    noise = pink_noise(1 << 15, np.random.default_rng(1))
    power = np.abs(np.fft.rfft(noise)) ** 2
    assert power[10:100].mean() > 10 * power[1000:10000].mean()
    loud = add_noise(np.ones(1000) * 0.99, 30.0, np.random.default_rng(0))
    assert np.max(np.abs(loud)) <= PEAK_LIMIT + 1e-6


def test_silence_has_no_snr():
    with pytest.raises(ValueError, match="silent"):
        add_noise(np.zeros(100), 10.0, np.random.default_rng(0))

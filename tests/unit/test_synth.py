import pytest
import soundfile as sf

from marco_demo.synth import Voice, available_voices, speak


@pytest.mark.tts
def test_every_listed_engine_speaks(tmp_path):
    voices = available_voices()
    assert {v.engine for v in voices} == {"flite", "espeak-ng", "festival"}
    for engine in ("flite", "espeak-ng", "festival"):
        voice = next(v for v in voices if v.engine == engine)
        path = speak("good morning", tmp_path / f"{engine}.wav", voice, sample_rate=8000)
        info = sf.info(path)
        assert info.samplerate == 8000 and info.channels == 1
        assert 0.3 < info.duration < 5.0


def test_unknown_engine_is_named(tmp_path):
    with pytest.raises(ValueError, match="nope"):
        speak("x", tmp_path / "x.wav", Voice("nope", "x"))

"""Speech synthesis with the Debian TTS engines (flite, espeak-ng, festival).

Used to make demo data and test audio on the machine itself: no dataset
download. Each engine writes a WAV; sox converts it to the rate and encoding
asked for.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: (engine, voice) pairs known to exist with the Debian packages the Makefile installs.
VOICES: tuple[tuple[str, str], ...] = (
    ("flite", "kal16"),
    ("flite", "slt"),
    ("flite", "awb"),
    ("flite", "rms"),
    ("espeak-ng", "en-us"),
    ("espeak-ng", "en-gb"),
    ("festival", "kal_diphone"),
)


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str


def _run(command: list[str], text: str | None = None) -> None:
    try:
        subprocess.run(command, input=text, text=True, check=True, capture_output=True)
    except FileNotFoundError as error:
        raise RuntimeError(f"{command[0]} is not installed (run `make install`)") from error
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"{' '.join(command)} failed: {error.stderr.strip()}") from error


def speak(
    text: str,
    path: str | Path,
    voice: Voice = Voice("flite", "kal16"),
    sample_rate: int = 16000,
    sox_effects: tuple[str, ...] = (),
    encoding: tuple[str, ...] = ("-b", "16", "-e", "signed-integer"),
) -> Path:
    """Speak ``text`` into ``path`` (mono, ``sample_rate``), optionally through sox effects."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        if voice.engine == "flite":
            _run(["flite", "-voice", voice.name, "-t", text, "-o", str(raw)])
        elif voice.engine == "espeak-ng":
            _run(["espeak-ng", "-v", voice.name, "-w", str(raw), text])
        elif voice.engine == "festival":
            script = Path(tmp) / "text.txt"
            script.write_text(text)
            _run(["text2wave", "-eval", f"(voice_{voice.name})", str(script), "-o", str(raw)])
        else:
            raise ValueError(f"unknown TTS engine {voice.engine!r}")
        # -R: sox seeds its dither with a fixed number, so the same text gives the same file.
        _run(
            [
                "sox",
                "-R",
                str(raw),
                *encoding,
                "-c",
                "1",
                str(path),
                "rate",
                "-v",
                str(sample_rate),
                *sox_effects,
            ]
        )
    return path


def available_voices() -> list[Voice]:
    return [
        Voice(engine, name)
        for engine, name in VOICES
        if shutil.which("text2wave" if engine == "festival" else engine)
    ]

"""marco-asr's demo and its fixtures: data made on the machine, not part of a cluster run.

Speech synthesised with the Debian TTS engines (``synth``), the demo's sentences
(``sentences``), the simulated phone line of its target domain (``phone_line``),
the two data sets built from them (``data``), and the offline Whisper tiny.en
imported from CTranslate2 (``ct2_import``). The tests use the same pieces to
make their audio and model.

This package lives outside the trainer image: it may import ``marco_trainer``
and ``marco_contract``, but neither of them (nor ``marco_operator``) imports it
(``tests/unit/test_imports.py``).
"""

__version__ = "0.1.0"

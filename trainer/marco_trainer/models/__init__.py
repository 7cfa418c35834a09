"""ASR model families behind one interface (:class:`~marco_trainer.models.base.AsrModel`).

- ``encoder-decoder``: Whisper and any ``AutoModelForSpeechSeq2Seq`` model;
  full fine-tuning.
- ``llm``: audio-LLMs such as Qwen2-Audio (audio encoder + projector + causal LM);
  LoRA adapters by default (peft), full fine-tuning on request.

Import :func:`load_asr_model` from here; it imports torch lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marco_contract.status import Family

if TYPE_CHECKING:
    from marco_trainer.models.base import AsrModel


def load_asr_model(*args: Any, **kwargs: Any) -> AsrModel:
    from marco_trainer.models.loading import load_asr_model as _load

    return _load(*args, **kwargs)


def family_from_config(source: str) -> Family:
    from marco_trainer.models.loading import family_from_config as _family

    return _family(source)

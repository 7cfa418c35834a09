"""Finding a model's family and loading it (plain, LoRA-wrapped, or from an adapter dir)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from marco_contract.status import Family
from marco_trainer.models.base import AsrModel, LoraOptions
from marco_trainer.models.llm import LlmAsr
from marco_trainer.models.seq2seq import EncoderDecoderAsr

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def _adapter_base(source: str) -> str | None:
    config = Path(source) / ADAPTER_CONFIG
    if config.is_file():
        return json.loads(config.read_text())["base_model_name_or_path"]
    return None


def family_from_config(source: str) -> Family:
    """``encoder-decoder`` or ``llm`` from the model's config (no weights loaded); the
    operator's ``family_from_name`` only guesses from the name, before this runs."""
    from transformers import AutoConfig, AutoModelForSpeechSeq2Seq

    base = _adapter_base(source) or source
    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as error:
        raise ValueError(f"--model {source}: cannot read a model config ({error})") from error
    if type(config) in AutoModelForSpeechSeq2Seq._model_mapping:
        return "encoder-decoder"
    if getattr(config, "audio_config", None) is not None and hasattr(config, "text_config"):
        return "llm"
    raise ValueError(
        f"--model {source}: model type {config.model_type!r} is neither a speech "
        "encoder-decoder nor an audio LLM; pass --family if it is one"
    )


def _model_class(config: Any, family: str) -> Any:
    import transformers

    if family == "encoder-decoder":
        return transformers.AutoModelForSpeechSeq2Seq
    for name in config.architectures or ():
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return transformers.AutoModelForMultimodalLM


def _empty_model(model_class: Any, config: Any, base: str) -> Any:
    """``model_class`` with no storage, plus what ``from_pretrained`` reads besides weights
    (the generation config Whisper's decoding needs) and the eval mode it leaves."""
    from transformers import GenerationConfig

    with torch.device("meta"):
        if hasattr(model_class, "from_config"):  # an Auto class
            model = model_class.from_config(config, dtype=torch.float32)
        else:
            model = model_class._from_config(config, dtype=torch.float32)
    try:
        model.generation_config = GenerationConfig.from_pretrained(base)
    except OSError:
        log.info("%s: no generation_config.json", base)
    return model.eval()


def load_asr_model(
    source: str,
    family: str = "auto",
    language: str | None = "en",
    task: str = "transcribe",
    lora: LoraOptions | None = None,
    trainable: bool = False,
    gradient_checkpointing: bool = False,
    weights: bool = True,
) -> AsrModel:
    """Load ``source`` (a directory or Hub id already in the local cache).

    ``weights=False`` builds the architecture on the meta device and reads no weights: a
    sharded run's other ranks receive theirs from rank 0 (``train.fsdp.broadcast_weights``).

    ``lora`` wraps an LLM-family model with fresh LoRA adapters for training. A
    directory holding a saved adapter (``adapter_config.json``) is loaded onto its
    base model, trainable when ``trainable``.
    """
    from transformers import AutoConfig, AutoProcessor

    if family == "auto":
        family = family_from_config(source)
    adapter_base = _adapter_base(source)
    base = adapter_base or source
    config = AutoConfig.from_pretrained(base)
    model_class = _model_class(config, family)
    if weights:
        model = model_class.from_pretrained(base, dtype=torch.float32)
    else:
        model = _empty_model(model_class, config, base)
    processor = AutoProcessor.from_pretrained(
        source if Path(source, "preprocessor_config.json").exists() else base
    )

    if gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen inputs (LoRA) and with DDP.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    if adapter_base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source, is_trainable=trainable)
    elif lora is not None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
            ),
        )
    if gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()

    cls = EncoderDecoderAsr if family == "encoder-decoder" else LlmAsr
    return cls(model, processor, source=base, language=language, task=task)

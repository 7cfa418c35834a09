"""What the trainer and the evaluator need from a model family."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

# The LoRA settings are the spec's `model.lora` (defaults there, once); re-exported here
# for the model loaders.
from marco_contract.options import DecodingOptions, LoraOptions
from marco_contract.status import Family
from marco_trainer.decoding import finish_tokens, token_budget

__all__ = ["IGNORE_INDEX", "AsrModel", "LoraOptions"]

if TYPE_CHECKING:
    # A transformers model, or a peft model that wraps one and forwards to it: its
    # generate/save_pretrained/config are not torch.nn.Module's.
    from transformers import PreTrainedModel

IGNORE_INDEX = -100

#: Seed of the temperature fallback's sampling: a WER must not depend on when it was
#: measured (the training loop's random state), or two checkpoints are not comparable.
DECODING_SEED = 0


class AsrModel:
    """A model, its processor, and how to turn audio + text into its inputs."""

    family: ClassVar[Family]

    def __init__(
        self,
        model: PreTrainedModel,
        processor: Any,
        source: str,
        language: str | None,
        task: str,
    ) -> None:
        self.model = model
        self.processor = processor
        self.source = source
        self.language = language
        self.task = task
        self.device = torch.device("cpu")
        self.autocast_dtype: torch.dtype | None = None
        # Set once FSDP has sharded the model (train.fsdp): weights then load through it.
        self.sharded = False

    @property
    def sampling_rate(self) -> int:
        return int(self.processor.feature_extractor.sampling_rate)

    @property
    def is_adapter(self) -> bool:
        return hasattr(self.model, "peft_config")

    def to(self, device: torch.device) -> AsrModel:
        self.model.to(device)
        self.device = device
        return self

    # -- batches ---------------------------------------------------------------
    def training_batch(self, audios: list[np.ndarray], texts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def transcribe(
        self, audios: list[np.ndarray], decoding: DecodingOptions | None = None
    ) -> list[str]:
        """One hypothesis per clip, decoded under ``decoding`` (the defaults when None)."""
        raise NotImplementedError

    def token_budgets(
        self, audios: list[np.ndarray], decoding: DecodingOptions, ceiling: int | None = None
    ) -> list[int]:
        """Each clip's length bound (:func:`marco_trainer.decoding.token_budget`)."""
        return [
            token_budget(len(audio) / self.sampling_rate, decoding, ceiling) for audio in audios
        ]

    def finish_hypotheses(
        self, rows: torch.Tensor, budgets: list[int], decoding: DecodingOptions
    ) -> list[str]:
        """Generated token rows (prompt removed) as text: each cut at its end-of-text, its
        budget and its loops (:func:`marco_trainer.decoding.finish_tokens`)."""
        tokenizer = self.processor.tokenizer
        stops = {t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None}
        kept = [
            finish_tokens(row, budget, decoding, stops)
            for row, budget in zip(rows.tolist(), budgets, strict=True)
        ]
        return [str(text) for text in tokenizer.batch_decode(kept, skip_special_tokens=True)]

    @contextmanager
    def _decoding_rng(self) -> Iterator[None]:
        """Sampling in decoding draws from :data:`DECODING_SEED`, and leaves the caller's
        random state (the training run's dropout and data order) as it was."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(DECODING_SEED)
            yield

    def example_inputs(self, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Each example's audio inputs in a training batch, for re-batching later.

        Empty when an example's inputs depend on its batch-mates (padding to the
        longest, a prompt shared with the text): then nothing can be reused.
        """
        return []

    def batch_from_inputs(
        self, inputs: list[dict[str, torch.Tensor]], texts: list[str]
    ) -> dict[str, torch.Tensor]:
        """The training batch of examples given by :meth:`example_inputs` and their texts."""
        raise NotImplementedError(f"{type(self).__name__} has no per-example inputs")

    def loss(self, module: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean token cross-entropy of ``batch`` through ``module`` (the model or its DDP)."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with self._autocast():
            # No KV cache in training: nothing reads it, and building it costs time and memory.
            return module(**batch, use_cache=False).loss

    def _autocast(self) -> torch.autocast:
        if self.autocast_dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    # -- parameters and files ----------------------------------------------------
    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        params = list(self.model.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def save(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Hugging Face format (model + processor); an adapter model saves its adapter only.

        ``state_dict``: the weights to write instead of the live model's (a sharded model's,
        gathered whole), keyed as ``self.model.state_dict()``.
        """
        extra = {} if state_dict is None else {"state_dict": state_dict}
        if self.is_adapter:
            # peft would also save a targeted lm_head's frozen base weights: adapters only.
            self.model.save_pretrained(str(path), save_embedding_layers=False, **extra)
        else:
            self.model.save_pretrained(str(path), **extra)
        self.processor.save_pretrained(str(path))

    def saved_state(self, path: str | Path) -> dict[str, torch.Tensor]:
        """The weights :meth:`save` wrote under ``path``, keyed as ``self.model.state_dict()``
        (a sharded model loads them with ``train.fsdp.load_weights``). Tied weights the save
        left out stay out. Safetensors only: one file, or the files a large model's index
        names."""
        import json

        from safetensors.torch import load_file

        path = Path(path)
        if not self.is_adapter:
            index = path / "model.safetensors.index.json"
            if index.exists():
                files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                return {k: v for name in files for k, v in load_file(str(path / name)).items()}
            if not (path / "model.safetensors").exists():
                raise ValueError(f"{path}: no model.safetensors nor its index")
            return load_file(str(path / "model.safetensors"))
        return self.adapter_state(load_file(str(path / "adapter_model.safetensors")))

    def adapter_state(self, saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Adapter weights as peft saves them, keyed as ``self.model.state_dict()``.

        peft drops the adapter's name from the keys it saves; which model key each saved key
        comes from is asked of peft itself: its own key mapping applied to a probe state
        dict of distinct empty tensors, read back by identity.
        """
        from peft import get_peft_model_state_dict

        probe = {key: torch.empty(0) for key in self.model.state_dict()}
        origin = {id(tensor): key for key, tensor in probe.items()}
        mapped = get_peft_model_state_dict(
            self.model, state_dict=probe, save_embedding_layers=False
        )
        model_key = {saved_key: origin[id(t)] for saved_key, t in mapped.items()}
        unknown = sorted(set(saved) - set(model_key))
        if unknown:
            raise ValueError(f"adapter weights do not fit the model (unexpected {unknown[:3]})")
        return {model_key[key]: tensor for key, tensor in saved.items()}

    def load_weights(self, path: str | Path) -> None:
        """Load weights saved by :meth:`save` into the live model (rollback, resume)."""
        path = Path(path)
        if self.sharded:
            from marco_trainer.train.fsdp import load_weights

            load_weights(self.model, self.saved_state(path), complete=not self.is_adapter)
            return
        if self.is_adapter:
            from peft import set_peft_model_state_dict
            from safetensors.torch import load_file

            state = load_file(str(path / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.model, state)
            return
        from transformers.trainer_utils import load_sharded_checkpoint

        if (path / "model.safetensors").exists():
            from safetensors.torch import load_file

            state = load_file(str(path / "model.safetensors"))
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            tied = {k for k in missing if "proj_out" in k or "lm_head" in k}
            if unexpected or set(missing) - tied:
                raise ValueError(
                    f"{path}: weights do not fit the model "
                    f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})"
                )
        else:
            load_sharded_checkpoint(self.model, str(path), strict=False)
        if hasattr(self.model, "tie_weights"):
            self.model.tie_weights()

    def merged_for_export(self) -> PreTrainedModel:
        """A self-contained model (adapters merged into a copy of the base weights)."""
        if self.is_adapter:
            return self.model.merge_and_unload()
        return self.model

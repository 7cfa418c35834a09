"""Encoder-decoder ASR (Whisper and other ``AutoModelForSpeechSeq2Seq`` models)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marco_contract.options import DecodingOptions, SpecAugmentOptions
from marco_trainer.models.base import IGNORE_INDEX, AsrModel
from marco_trainer.models.whisper_features import window_log_mel

#: The config attributes SpecAugmentOptions sets, named as in Hugging Face's WhisperConfig.
_SPEC_AUGMENT_KEYS = (
    "apply_spec_augment",
    "mask_time_prob",
    "mask_time_length",
    "mask_time_min_masks",
    "mask_feature_prob",
    "mask_feature_length",
    "mask_feature_min_masks",
)


class EncoderDecoderAsr(AsrModel):
    family = "encoder-decoder"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pretrained_spec_augment: dict[str, Any] | None = None
        tokenizer = self.processor.tokenizer
        if hasattr(tokenizer, "set_prefix_tokens") and self._multilingual:
            # Labels then start with <|startoftranscript|><|lang|><|task|><|notimestamps|>.
            tokenizer.set_prefix_tokens(language=self.language, task=self.task)

    # -- SpecAugment -------------------------------------------------------------
    def set_spec_augment(self, options: SpecAugmentOptions) -> None:
        """SpecAugment while training, through the model config's own switches.

        Whisper masks its input features in ``forward`` only in training mode
        (``module.train()``), never in ``generate``: validation is untouched. The
        config is set whether on or off, so the spec decides and not a value a
        checkpoint happened to carry. Checkpoints and the export keep the
        pretrained values (:meth:`save`).
        """
        config = self.model.config
        if not hasattr(config, "apply_spec_augment"):
            if options.enabled:
                raise ValueError(
                    f"--spec-augment-enabled: {type(config).__name__} has no SpecAugment"
                )
            return
        if options.enabled:
            self._check_mask_lengths(options)
        if self._pretrained_spec_augment is None:
            self._pretrained_spec_augment = {
                key: getattr(config, key) for key in _SPEC_AUGMENT_KEYS if hasattr(config, key)
            }
        config.apply_spec_augment = options.enabled
        if options.enabled:
            for key in _SPEC_AUGMENT_KEYS[1:]:
                setattr(config, key, getattr(options, key))

    def _check_mask_lengths(self, options: SpecAugmentOptions) -> None:
        # transformers would refuse a span longer than its axis only at the first step.
        extractor = self.processor.feature_extractor
        axes = [
            ("time-length", options.mask_time_length, getattr(extractor, "nb_max_frames", None)),
            (
                "feature-length",
                options.mask_feature_length,
                getattr(extractor, "feature_size", None),
            ),
        ]
        for flag, length, size in axes:
            if isinstance(size, int) and length > size:
                raise ValueError(
                    f"--spec-augment-mask-{flag} {length}: longer than the model's {size} "
                    "input " + ("frames" if flag.startswith("time") else "mel bins")
                )

    @contextmanager
    def _pretrained_config(self) -> Iterator[None]:
        saved = self._pretrained_spec_augment
        config = self.model.config
        current = {key: getattr(config, key) for key in saved or {}}
        for key, value in (saved or {}).items():
            setattr(config, key, value)
        try:
            yield
        finally:
            for key, value in current.items():
                setattr(config, key, value)

    def save(self, path: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        # Training masks are a property of this run, not of the model handed on.
        with self._pretrained_config():
            super().save(path, state_dict)

    @property
    def _multilingual(self) -> bool:
        return bool(getattr(self.model.generation_config, "is_multilingual", False))

    def _features(self, audios: list[np.ndarray]) -> dict[str, torch.Tensor]:
        if self._fixed_window:
            window = window_log_mel(self.processor.feature_extractor, audios, self.sampling_rate)
            if window is not None:
                return {"input_features": window}
        out = self.processor.feature_extractor(
            audios, sampling_rate=self.sampling_rate, return_tensors="pt"
        )
        name = "input_features" if "input_features" in out else "input_values"
        features = {name: out[name]}
        if "attention_mask" in out and name == "input_values":
            features["attention_mask"] = out["attention_mask"]
        return features

    def training_batch(self, audios: list[np.ndarray], texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self._features(audios)
        batch["labels"] = self._labels(texts)
        return batch

    def _labels(self, texts: list[str]) -> torch.Tensor:
        tokenizer = self.processor.tokenizer
        ids = tokenizer(texts).input_ids
        start = self.model.config.decoder_start_token_id
        # The model prepends decoder_start itself when shifting labels right.
        ids = [seq[1:] if seq and seq[0] == start else seq for seq in ids]
        width = max(len(seq) for seq in ids)
        labels = torch.full((len(ids), width), IGNORE_INDEX, dtype=torch.long)
        for row, seq in enumerate(ids):
            labels[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        return labels

    @property
    def _fixed_window(self) -> bool:
        # Whisper's extractor pads every clip to its window: a clip's features do not
        # depend on the rest of the batch. Others pad to the longest clip in the batch.
        return type(self.processor.feature_extractor).__name__ == "WhisperFeatureExtractor"

    def example_inputs(self, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if not self._fixed_window or set(batch) != {"input_features", "labels"}:
            return []
        return [{"input_features": row} for row in batch["input_features"]]

    def batch_from_inputs(
        self, inputs: list[dict[str, torch.Tensor]], texts: list[str]
    ) -> dict[str, torch.Tensor]:
        features = torch.stack([example["input_features"] for example in inputs])
        return {"input_features": features, "labels": self._labels(texts)}

    @torch.no_grad()
    def transcribe(
        self, audios: list[np.ndarray], decoding: DecodingOptions | None = None
    ) -> list[str]:
        decoding = decoding or DecodingOptions()
        batch = {k: v.to(self.device) for k, v in self._features(audios).items()}
        kwargs: dict = {}
        if self._multilingual:
            kwargs = {"language": self.language, "task": self.task}
        if decoding.temperature_fallback:
            kwargs.update(self._fallback(decoding))
        limit = getattr(self.model.config, "max_target_positions", None)
        # The decoder prompt (start, language, task, no-timestamps) takes positions too.
        budgets = self.token_budgets(audios, decoding, ceiling=limit - 8 if limit else None)
        self.model.eval()
        with self._autocast(), self._decoding_rng():
            # Batched to the longest budget; each row is cut to its own afterwards.
            out = self.model.generate(
                **batch, max_new_tokens=max(budgets), do_sample=False, num_beams=1, **kwargs
            )
        sequences = out.sequences if hasattr(out, "sequences") else out
        return self.finish_hypotheses(self._generated(sequences), budgets, decoding)

    def _fallback(self, decoding: DecodingOptions) -> dict[str, Any]:
        """Whisper's temperature fallback (transformers' WhisperGenerationMixin): greedy
        first, then each temperature for the hypotheses that still fail a threshold. The
        rows that need it are decoded again as one smaller batch."""
        if not hasattr(self.model, "_retrieve_compression_ratio"):
            return {}  # not a Whisper: plain generate has no fallback
        return {
            "temperature": (0.0, *decoding.temperature_fallback),
            "compression_ratio_threshold": decoding.compression_ratio_threshold or None,
            "logprob_threshold": decoding.logprob_threshold,
        }

    def _generated(self, sequences: torch.Tensor) -> torch.Tensor:
        """The generated part of ``generate``'s rows: Whisper's generate returns it alone;
        other encoder-decoders start with the decoder start token."""
        start = self.model.config.decoder_start_token_id
        if start is not None and sequences.shape[1] and bool((sequences[:, 0] == start).all()):
            return sequences[:, 1:]
        return sequences

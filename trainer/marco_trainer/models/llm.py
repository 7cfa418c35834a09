"""LLM-based ASR: an audio encoder feeding a causal language model (Qwen2-Audio).

The model reads a prompt holding the audio placeholder and answers with the
transcript. Training sequences are ``prompt + transcript + eos`` with the loss
on the transcript and eos only; generation pads prompts on the left.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from marco_contract.options import DecodingOptions
from marco_trainer.models.base import IGNORE_INDEX, AsrModel

#: Qwen2-Audio's speech-recognition prompt (the base model's documented ASR prompt).
DEFAULT_PROMPT = (
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "Detect the language and recognize the speech: <|{language}|>"
)


class LlmAsr(AsrModel):
    family = "llm"

    def __init__(self, *args: Any, prompt: str = DEFAULT_PROMPT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prompt = prompt.format(language=self.language or "en")
        tokenizer = self.processor.tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    def _prompt_inputs(self, audios: list[np.ndarray]) -> dict[str, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            return self.processor(
                text=[self.prompt] * len(audios),
                audio=audios,
                sampling_rate=self.sampling_rate,
                return_tensors="pt",
                padding=True,
            )
        finally:
            tokenizer.padding_side = side

    def training_batch(self, audios: list[np.ndarray], texts: list[str]) -> dict[str, torch.Tensor]:
        tokenizer = self.processor.tokenizer
        inputs = self._prompt_inputs(audios)
        prompts = [
            row[mask.bool()].tolist()
            for row, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True)
        ]
        targets = [
            [*tokenizer(text, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
            for text in texts
        ]
        width = max(len(p) + len(t) for p, t in zip(prompts, targets, strict=True))
        input_ids = torch.full((len(texts), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(texts), width), dtype=torch.long)
        labels = torch.full((len(texts), width), IGNORE_INDEX, dtype=torch.long)
        for row, (prompt, target) in enumerate(zip(prompts, targets, strict=True)):
            sequence = torch.tensor(prompt + target, dtype=torch.long)
            input_ids[row, : len(sequence)] = sequence
            attention[row, : len(sequence)] = 1
            labels[row, len(prompt) : len(sequence)] = torch.tensor(target, dtype=torch.long)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "input_features": inputs["input_features"],
            "feature_attention_mask": inputs["feature_attention_mask"],
        }

    @torch.no_grad()
    def transcribe(
        self, audios: list[np.ndarray], decoding: DecodingOptions | None = None
    ) -> list[str]:
        # The length bound and the loop cut apply; Whisper's temperature fallback does
        # not (plain generate has none).
        decoding = decoding or DecodingOptions()
        tokenizer = self.processor.tokenizer
        inputs = {k: v.to(self.device) for k, v in self._prompt_inputs(audios).items()}
        budgets = self.token_budgets(audios, decoding)
        self.model.eval()
        with self._autocast(), self._decoding_rng():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max(budgets),
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        generated = out[:, inputs["input_ids"].shape[1] :]
        return self.finish_hypotheses(generated, budgets, decoding)

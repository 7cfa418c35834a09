"""What keeps a fine-tuned model from forgetting: LR warm-up inside a cycle, partial
freezing. Pure functions of the options and the model; the loop calls them.

SpecAugment is the model family's business (`EncoderDecoderAsr.set_spec_augment`),
and the clean-source share the data stream's (`marco_trainer.data.CleanMix`).
"""

from __future__ import annotations

import torch

from marco_contract.options import FreezeOptions


def warmup_factor(step_in_cycle: int, warmup_steps: int, start_factor: float) -> float:
    """The share of the cycle's LR for its ``step_in_cycle``-th step (0 = the first).

    Linear from ``start_factor`` at the cycle's first step to 1 at step
    ``warmup_steps``: a new cycle's higher LR then does not hit the weights at
    once with AdamW moments estimated under the previous LR.
    """
    if step_in_cycle >= warmup_steps:
        return 1.0
    return start_factor + (1.0 - start_factor) * step_in_cycle / warmup_steps


def freeze_encoder(model: torch.nn.Module, options: FreezeOptions) -> int:
    """Turn off gradients of the encoder, or of its stem and first layers; returns how many
    parameters (elements) were trainable before and are frozen now.

    The encoder carries the acoustic knowledge a small source set is least able to
    improve, and the decoder the language that the target's text changes.
    """
    if not options.encoder and not options.encoder_layers:
        return 0
    get_encoder = getattr(model, "get_encoder", None)
    encoder = get_encoder() if callable(get_encoder) else None
    layers = getattr(encoder, "layers", None)
    if not isinstance(encoder, torch.nn.Module) or not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"--freeze-encoder/--freeze-encoder-layers: {type(model).__name__} has no encoder "
            "with a list of layers"
        )
    if options.encoder:
        frozen = list(encoder.parameters())
    else:
        if options.encoder_layers > len(layers):
            raise ValueError(
                f"--freeze-encoder-layers {options.encoder_layers}: the encoder has "
                f"{len(layers)} layers"
            )
        # The stem (convolutions, position embeddings: the modules registered before the
        # layers) feeds every layer, so it is frozen with them; the final norm is not.
        children = [name for name, _ in encoder.named_children()]
        stem = [getattr(encoder, name) for name in children[: children.index("layers")]]
        frozen = [p for module in stem for p in module.parameters()]
        for layer in layers[: options.encoder_layers]:
            frozen += list(layer.parameters())
    count = 0
    for parameter in frozen:
        if parameter.requires_grad:
            count += parameter.numel()
            parameter.requires_grad_(False)
    return count

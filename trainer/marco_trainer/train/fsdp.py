"""FSDP2 (``training.strategy: fsdp``): parameters, gradients and optimizer moments sharded
over the ranks instead of replicated, for models whose training state does not fit one GPU.

Each transformer layer is one FSDP unit (all-gathered for its forward and backward, freed
after), the rest of the model the root unit. A LoRA model is wrapped after peft: a unit then
holds frozen base weights and trainable adapters together, which FSDP2 allows (per-parameter
sharding; only the trainable ones get gradients).

Checkpoints stay the Hugging Face files of an unsharded run: the weights and the optimizer
state are gathered whole to rank 0 (:func:`gather_weights`, :func:`gather_optimizer`) and
loaded back whole on every rank, which keeps its shard (:func:`load_weights`,
:func:`load_optimizer`). So a checkpoint resumes under either strategy and the export is a
plain ``save_pretrained`` folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

#: Whole tensors on rank 0's host: the checkpoint files are written from there.
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
#: Whole tensors given on every rank; missing keys (tied weights a save leaves out) are fine.
_SCATTER = StateDictOptions(full_state_dict=True, strict=False)


def layer_classes(model: torch.nn.Module) -> set[str]:
    """The class names Hugging Face marks as not to be split (its transformer layers): the
    ``_no_split_modules`` of every pretrained model inside ``model`` (peft wraps one)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return names


def layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The outermost modules of :func:`layer_classes` (an attention block listed too stays
    inside its layer's unit), in ``modules()`` order."""
    classes = layer_classes(model)
    found: list[torch.nn.Module] = []
    inside: set[int] = set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if type(module).__name__ in classes:
            found.append(module)
            inside.update(id(m) for m in module.modules())
    return found


def shard(model: torch.nn.Module, device: torch.device, world_size: int, bf16: bool) -> int:
    """``fully_shard`` each layer, then the root; the model's full weights may still be on
    the host: each unit's are moved to ``device`` as it is sharded. Returns the layer count.

    With bf16 the all-gathered weights are bf16 and gradients are reduced in fp32 (sums of
    many bf16 numbers lose digits); the sharded master weights stay fp32.
    """
    units = layers(model)
    if not units:
        raise ValueError(
            f"--strategy fsdp: {type(model).__name__} names no transformer layer "
            "(_no_split_modules) to shard by"
        )
    mesh = init_device_mesh(device.type, (world_size,))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return len(units)


def units(model: torch.nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """Reduce-scatter gradients in this backward (the step's last micro-batch) or keep
    accumulating them unsharded (the earlier ones), as DDP's ``no_sync``."""
    root = model if isinstance(model, FSDPModule) else None
    if root is not None:
        root.set_requires_gradient_sync(sync)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (``clip_grad_norm_`` returns one over sharded gradients)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """Every unit's weights all-gathered and kept until the block ends.

    Decoding runs a different number of forwards on each rank (its own utterances, its own
    lengths), and the per-forward all-gathers would then wait on each other forever; with the
    whole model gathered once, each rank decodes alone. It costs the full weights (bf16 under
    mixed precision) on each device for the evaluation's duration.
    """
    fsdp = units(model)
    for unit in fsdp:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in fsdp:
            unit.set_reshard_after_forward(True, recurse=False)
            unit.reshard()


def gather_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on rank 0 (host memory), empty on the others. Every rank calls it.

    A tied weight (Whisper's output projection is its token embedding) is kept once, under
    its first name, as an unsharded ``save_pretrained`` writes it: the gathered copies are
    separate tensors, which it would write twice.
    """
    # Tensors all: a model's state dict holds no other kind of value.
    state = cast("dict[str, torch.Tensor]", get_model_state_dict(model, options=_GATHER))
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            state.pop(name, None)
        seen.add(id(tensor))
    return state


def gather_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name, whole on rank 0. Every rank calls it."""
    return get_optimizer_state_dict(model, optimizer, options=_GATHER)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Whole weights (keys as ``model.state_dict()``'s) given on every rank, each keeping
    its shard; keys absent from ``state`` keep their values."""
    set_model_state_dict(model, dict(state), options=_SCATTER)


def load_optimizer(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    set_optimizer_state_dict(model, optimizer, state, options=_SCATTER)

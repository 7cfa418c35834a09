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
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

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


def agree_trainable(model: torch.nn.Module) -> None:
    """Every rank trains the parameters rank 0's model trains.

    A model built empty (``load_asr_model(weights=False)``) can differ from a loaded one
    there: ``from_pretrained`` leaves Whisper's encoder positions trainable, its constructor
    freezes them. Ranks that disagree would reduce different gradients and hang or fail.
    """
    names = [[n for n, p in model.named_parameters() if p.requires_grad]]
    dist.broadcast_object_list(names, src=0)
    trainable = set(names[0])
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)


def whole_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rank 0's parameters and buffers by name, taken before :func:`shard` replaces them."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def broadcast_weights(
    model: torch.nn.Module, device: torch.device, whole: dict[str, torch.Tensor] | None
) -> None:
    """Rank 0's weights into every rank's shards, after :func:`shard`.

    Only rank 0 read the model from disk (``whole``, from :func:`whole_weights`; None
    elsewhere); the others built it on the meta device, so the host holds one full copy
    instead of one per rank. One tensor at a time is broadcast whole and each rank keeps its
    shard: the most any rank holds besides its shards is the largest tensor. (DCP's
    ``broadcast_from_rank0`` would hold every received tensor until the end: the whole model
    on every rank.) Buffers go the same way: rotary frequencies, say, are in no checkpoint.
    """
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model.to_empty(device=device)
    with torch.no_grad():
        for name, target in [*model.named_parameters(), *model.named_buffers()]:
            if whole is not None:
                full = whole[name].detach().to(device)
            else:
                full = torch.empty(target.shape, dtype=target.dtype, device=device)
            dist.broadcast(full, src=0)
            if isinstance(target, DTensor):
                # Every rank has the whole tensor now: its shard is cut locally.
                full = distribute_tensor(
                    full, target.device_mesh, target.placements, src_data_rank=None
                )
            target.copy_(full)


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


def load_weights(
    model: torch.nn.Module, state: dict[str, torch.Tensor], complete: bool = True
) -> None:
    """Whole weights (keys as ``model.state_dict()``'s) given on every rank, each keeping
    its shard. ``set_model_state_dict`` ignores what does not fit (strict is off for the
    tied weights a save leaves out), so the fit is checked here, as the unsharded load does:
    no unknown key, and with ``complete`` (not an adapter) every parameter given, a tied one
    through its twin."""
    expected = model.state_dict(keep_vars=True)
    unexpected = sorted(set(state) - set(expected))
    given = {id(expected[k]) for k in state if k in expected}
    params = {id(p) for p in model.parameters()}
    missing = sorted(
        k for k, t in expected.items() if id(t) in params and k not in state and id(t) not in given
    )
    if unexpected or (complete and missing):
        raise ValueError(
            f"weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    set_model_state_dict(model, dict(state), options=_SCATTER)


def load_optimizer(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    set_optimizer_state_dict(model, optimizer, state, options=_SCATTER)

"""Checkpoints: ``best`` (Hugging Face format, what gets exported) and ``last`` (resume).

``last`` holds the model in Hugging Face format plus what a resumed run needs to
continue exactly: optimizer state, RNG states, data-stream position, the
evaluation history and the directive in force (``trainer_state.json``). Both
are written to a temporary folder, every file and the folder fsynced, and swapped
in, so a kill or a power loss mid-save leaves the previous checkpoint intact.

``last`` keeps its previous version beside it (``.last.old``, one save older,
as resumable as ``last``): a ``last`` that cannot be read back is moved aside
(:func:`quarantine`, never deleted) and the run resumes from that one. The old version
is removed before the new one is written, so a save never holds more than two copies,
as it did before it was kept.

Whoever can write the output volume can write these files, so nothing read back
runs code: ``optimizer.pt`` and ``rng.pt`` are read with ``weights_only=True``
(tensors, numbers, strings and containers only; a pickle naming any other
callable is refused), which is why the RNG states are saved as such (numpy's
key as a list of ints rather than an ndarray).
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, Field

from marco_contract.files import atomic_write_text
from marco_contract.formats import Directive, Evaluation

if TYPE_CHECKING:
    from marco_trainer.models.base import AsrModel

STATE_FILE = "trainer_state.json"
BEST_FILE = "best.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
T = TypeVar("T")


class CheckpointError(RuntimeError):
    """A ``last`` checkpoint that cannot be read back (truncated, garbled): the message names
    the folder, the file and the cause."""


log = logging.getLogger(__name__)


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint file holds more than tensors and plain data: it is not loaded (and,
    as any unreadable ``last``, moved aside rather than resumed from)."""


class TrainerState(BaseModel):
    """Everything besides tensors that a resumed run needs (``trainer_state.json``)."""

    step: int = 0
    epoch: int = 0
    offset: int = Field(default=0, description="Micro-batch position inside the epoch.")
    cycle: int = 0
    learning_rate: float
    warmup_cycle: int = Field(default=0, description="The cycle whose LR warm-up is under way.")
    cycle_start_step: int = Field(default=0, description="Steps done when that cycle began.")
    directive: Directive | None = None
    evaluations: list[Evaluation] = Field(default_factory=list)
    best_wer: float | None = None
    best_step: int | None = None
    loss_sum: float = Field(default=0.0, description="Losses since the last evaluation.")
    loss_steps: int = 0
    nonfinite_steps: int = 0
    nonfinite_since_eval: int = 0
    consecutive_nonfinite: int = 0
    rollbacks: int = 0
    corrupt_checkpoints: int = Field(
        default=0, description="Checkpoints that could not be read back and were moved aside."
    )
    skipped_audio: int = 0
    samples: int = 0
    tokens: int = 0


class BestInfo(BaseModel):
    """``best.json`` next to the best weights: what the model card reports."""

    step: int
    wer: float
    cer: float | None = None
    family: str
    base_model: str
    language: str | None = None
    train_manifests: list[str] = Field(default_factory=list)
    train_utterances: int = 0
    train_hours: float = 0.0
    adaptation: str | None = None


def fsync_path(path: Path) -> None:
    """``path`` (a file or a folder: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Every file under ``folder``, then every folder, deepest first, to disk."""
    paths = sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for path in [p for p in paths if p.is_file()] + [p for p in paths if p.is_dir()]:
        fsync_path(path)
    fsync_path(folder)


def previous_dir(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def replace_dir(target: Path, write: Callable[[Path], None], keep_previous: bool = False) -> None:
    """Build a folder with ``write(tmp)``, fsync it, and swap it in for ``target``.

    With ``keep_previous`` the version it replaces stays as :func:`previous_dir` until the
    next swap. Either way a kill at any point leaves ``target`` or its previous version whole
    (:func:`existing_dir`), and at most two copies exist at once.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fresh = target.parent / f".{target.name}.new"
    old = previous_dir(target)
    shutil.rmtree(fresh, ignore_errors=True)
    if target.is_dir():  # else ``old`` is the newest whole version (a kill between renames)
        shutil.rmtree(old, ignore_errors=True)
    fresh.mkdir()
    write(fresh)
    fsync_tree(fresh)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    fsync_path(target.parent)
    if not keep_previous:
        shutil.rmtree(old, ignore_errors=True)


def existing_dir(target: Path) -> Path | None:
    """``target`` or, after a kill between the two renames, its previous version."""
    if target.is_dir():
        return target
    old = previous_dir(target)
    return old if old.is_dir() else None


def resume_candidates(target: Path) -> list[Path]:
    """The versions of ``last`` to resume from, newest first."""
    return [p for p in (target, previous_dir(target)) if p.is_dir()]


def quarantine(source: Path) -> Path:
    """Move a checkpoint that cannot be read back aside, to ``<name>.corrupt-<UTC time>``
    beside it (``last`` or ``.last.old`` → ``last.corrupt-…``, ``last.old.corrupt-…``):
    nothing deleted, the user can inspect it; nothing resumes from it again."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = source.parent / f"{source.name.lstrip('.')}.corrupt-{stamp}"
    target, n = base, 1
    while target.exists():
        target, n = base.with_name(f"{base.name}-{n}"), n + 1
    source.rename(target)
    fsync_path(source.parent)
    return target


def rng_state() -> dict:
    """The RNG states as plain data and tensors, loadable with ``weights_only=True``."""
    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": (str(kind), [int(k) for k in key], int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_rng_state(saved: dict, rank: int) -> dict | None:
    """This rank's RNG states out of an ``rng.pt``: one entry per rank (``{"ranks": [...]}``),
    or, written before that, rank 0's alone, which only rank 0 can use. None: the file
    holds none for this rank (a run resumed on more ranks than it was saved on)."""
    if "ranks" not in saved:
        return saved if rank == 0 else None
    states = saved["ranks"]
    return states[rank] if rank < len(states) else None


def save_last(
    target: Path,
    asr: AsrModel,
    optimizer_state: dict[str, Any],
    state: TrainerState,
    weights: dict[str, torch.Tensor] | None = None,
    rng_states: list[dict] | None = None,
) -> None:
    """``weights``: a sharded model's, gathered whole (else the live model's are written);
    ``optimizer_state`` likewise the optimizer's ``state_dict()`` or its gathered state;
    ``rng_states`` every rank's, in rank order (None: this process's, a single rank).
    Each rank's own states, not rank 0's for all: dropout masks (LoRA's, Whisper's) are
    drawn from each rank's generator, so a resumed rank 1 must go on from its own."""

    def write(folder: Path) -> None:
        asr.save(folder, weights)
        torch.save(optimizer_state, folder / OPTIMIZER_FILE)
        torch.save({"ranks": rng_states or [rng_state()]}, folder / RNG_FILE)
        atomic_write_text(folder / STATE_FILE, state.model_dump_json(indent=2))

    replace_dir(target, write, keep_previous=True)


def _reading(source: Path, what: str, read: Callable[[], T]) -> T:
    try:
        return read()
    except CheckpointError:
        raise  # already says which file and why (UnsafeCheckpoint)
    except Exception as error:
        raise CheckpointError(
            f"cannot resume from {source}: {what} is unreadable ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:300]})"
        ) from error


def load_tensors(path: Path, map_location: str | torch.device | None = None) -> Any:
    """``torch.load`` that runs no code: tensors and plain data, else UnsafeCheckpoint."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's weights-only unpickler says "Unsupported global" when the pickle names a
        # callable outside its allow-list; anything else it cannot read (it wraps garbage
        # as "Weights only load failed" too) is a damaged file, said as such by the caller.
        if "unsupported global" not in str(error).lower():
            raise
        raise UnsafeCheckpoint(
            f"{path}: refused, it holds more than tensors and plain data (written by an "
            f"older marco-trainer, or by someone else; remove it to resume without it): "
            f"{str(error).splitlines()[0]}"
        ) from error


def rekey_optimizer_state(saved: dict, names: list[str], by_name: bool) -> dict:
    """An optimizer state dict keyed by parameter name (as FSDP saves it) or by index (as
    ``Optimizer.state_dict`` does), whichever ``by_name`` asks: a ``last`` written under one
    ``training.strategy`` resumes under the other. ``names``: the trainable parameters' names
    in the optimizer's order (``AsrModel.trainable_parameters``)."""
    groups = saved.get("param_groups") or []
    keys = [key for group in groups for key in group["params"]]
    if not keys or isinstance(keys[0], str) == by_name:
        return saved
    if len(keys) != len(names):
        raise ValueError(f"{OPTIMIZER_FILE}: {len(keys)} parameters, the model trains {len(names)}")
    new_key = (
        dict(zip(keys, names, strict=True)) if by_name else {n: i for i, n in enumerate(names)}
    )
    return {
        "state": {new_key[key]: value for key, value in saved["state"].items()},
        "param_groups": [
            {**group, "params": [new_key[key] for key in group["params"]]} for group in groups
        ],
    }


def load_last(
    source: Path, asr: AsrModel, optimizer: torch.optim.Optimizer, rank: int = 0
) -> TrainerState:
    _reading(source, "the model's weights", lambda: asr.load_weights(source))

    def load_optimizer() -> None:
        saved = load_tensors(source / OPTIMIZER_FILE, map_location=asr.device)
        names = [n for n, p in asr.model.named_parameters() if p.requires_grad]
        if asr.sharded:  # whole state, keyed by parameter name: each rank keeps its shard
            from marco_trainer.train.fsdp import load_optimizer as load_sharded

            load_sharded(asr.model, optimizer, rekey_optimizer_state(saved, names, by_name=True))
        else:
            optimizer.load_state_dict(rekey_optimizer_state(saved, names, by_name=False))

    _reading(source, OPTIMIZER_FILE, load_optimizer)
    if (source / RNG_FILE).exists():
        saved = _reading(source, RNG_FILE, lambda: load_tensors(source / RNG_FILE))
        mine = _reading(source, RNG_FILE, lambda: rank_rng_state(saved, rank))
        if mine is None:
            log.warning("%s: no RNG states for rank %d, it resumes with fresh ones", source, rank)
        else:
            _reading(source, RNG_FILE, lambda: set_rng_state(mine))
    else:
        log.warning("%s: no %s, resuming with fresh RNG states", source, RNG_FILE)
    return _reading(
        source,
        STATE_FILE,
        lambda: TrainerState.model_validate_json((source / STATE_FILE).read_text()),
    )


def save_best(
    target: Path, asr: AsrModel, info: BestInfo, weights: dict[str, torch.Tensor] | None = None
) -> None:
    def write(folder: Path) -> None:
        asr.save(folder, weights)
        atomic_write_text(folder / BEST_FILE, info.model_dump_json(indent=2))

    replace_dir(target, write)

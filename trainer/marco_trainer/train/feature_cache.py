"""Model inputs of training utterances, kept in memory across epochs.

Featurising audio (decode, resample, log-mel) is the same work every epoch for
the same file, and on a CPU it is a tenth of a small model's step. The cache
keeps each utterance's audio inputs, as the model family computed them, up to
a byte budget; later epochs skip the file and the featuriser. Reconstructed
inputs are bit-identical, so training does not change with the cache on or off.

Whisper pads every clip to its 30 s window, and the padded frames of a
log-mel spectrogram are one repeated column: a tensor is stored without its
run of trailing columns equal to the last one (a 3 s clip keeps about a
tenth), and that column is repeated back on the way out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

#: Share of the container's memory the caches of all ranks on a node may take, and the
#: most one rank takes: the rest is the model, the optimizer, the data loader and the OS.
MEMORY_SHARE = 8
MAX_AUTO_BYTES = 2 << 30


@dataclass(frozen=True)
class _Packed:
    head: torch.Tensor  # the columns before the repeated tail
    tail: torch.Tensor | None  # the repeated last column ([..., 1]), None if nothing repeats
    length: int  # columns in the full tensor

    @property
    def nbytes(self) -> int:
        tail = self.tail.nbytes if self.tail is not None else 0
        return self.head.nbytes + tail


def pack(tensor: torch.Tensor) -> _Packed:
    """``tensor`` (last dimension = time) without its trailing copies of the last column."""
    if tensor.dim() == 0 or tensor.shape[-1] < 3:
        return _Packed(tensor.clone(), None, tensor.shape[-1] if tensor.dim() else 0)
    length = tensor.shape[-1]
    last = tensor[..., -1:]
    same = (tensor == last).reshape(-1, length).all(dim=0)
    # Columns at the end equal to the last one: the length of the final run of True.
    repeats = int(same.flip(0).int().cumprod(0).sum())
    if repeats < 3:  # the stored column would cost what it saves
        return _Packed(tensor.clone(), None, length)
    return _Packed(tensor[..., : length - repeats].clone(), last.clone(), length)


def unpack(packed: _Packed) -> torch.Tensor:
    if packed.tail is None:
        return packed.head
    missing = packed.length - packed.head.shape[-1]
    shape = (*packed.tail.shape[:-1], missing)
    return torch.cat([packed.head, packed.tail.expand(shape)], dim=-1)


class FeatureCache:
    """Per-utterance model inputs by example index, up to ``max_bytes`` (0 disables)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: dict[int, dict[str, _Packed]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get_all(self, keys: list[int]) -> list[dict[str, torch.Tensor]] | None:
        """Inputs of every key, or None when any is missing (the batch is featurised anew)."""
        if any(key not in self._items for key in keys):
            return None
        return [{name: unpack(packed) for name, packed in self._items[key].items()} for key in keys]

    def put(self, key: int, inputs: dict[str, torch.Tensor]) -> bool:
        """Keep ``inputs`` for ``key`` if the budget allows; True if stored."""
        if not self.max_bytes or key in self._items:
            return False
        item = {name: pack(tensor) for name, tensor in inputs.items()}
        size = sum(packed.nbytes for packed in item.values())
        if self.bytes + size > self.max_bytes:
            return False
        self._items[key] = item
        self.bytes += size
        return True


def auto_budget(memory_limit: int, local_ranks: int) -> int:
    """Bytes one rank may cache: an eighth of the memory shared by the node's ranks, capped."""
    return min(MAX_AUTO_BYTES, memory_limit // (MEMORY_SHARE * max(local_ranks, 1)))


def container_memory_limit() -> int:
    """The cgroup's memory limit (v2, then v1), else the machine's physical memory."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" means no limit; v1 reports a huge number instead
            return min(int(text), physical)
    return physical

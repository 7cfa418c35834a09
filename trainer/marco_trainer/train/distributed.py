"""torchrun plumbing: the same code runs as one process or N×G ranks.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; without them the
run is a single process and every collective is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

# Forces the process group's backend. Only for checks on a machine with fewer GPUs than
# ranks: NCCL refuses two ranks on one GPU, gloo (slower, through the host) does not.
BACKEND_ENV = "MARCO_DIST_BACKEND"


def _gpu_index(local_rank: int, gpus: int, forced_backend: str) -> int:
    """The GPU of this rank: its local rank, or shared round-robin under a forced gloo."""
    if local_rank < gpus:
        return local_rank
    if forced_backend == "gloo":
        return local_rank % gpus
    raise RuntimeError(
        f"LOCAL_RANK {local_rank} but {gpus} GPU(s) visible: start at most {gpus} "
        f"process(es) per node (torchrun --nproc-per-node, training.gpusPerNode); NCCL "
        f"refuses two ranks on one GPU. For a check on fewer GPUs, set {BACKEND_ENV}=gloo."
    )


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    local_world_size: int = 1  # ranks on this node (they share its memory)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        forced = os.environ.get(BACKEND_ENV, "")
        if torch.cuda.is_available():
            device = torch.device("cuda", _gpu_index(local, torch.cuda.device_count(), forced))
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            dist.init_process_group(backend=forced or ("nccl" if device.type == "cuda" else "gloo"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return cls(rank, world, local, device, local_world)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def all_sum(self, values: list[float] | torch.Tensor) -> list[float]:
        """Element-wise sum over ranks, read back to the host (one sync)."""
        tensor = torch.as_tensor(values, dtype=torch.float64, device=self.device)
        if self.active:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast_floats(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.active:
            dist.broadcast(tensor, src=0)
        return tensor.tolist()

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()

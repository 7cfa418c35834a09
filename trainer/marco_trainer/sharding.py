"""Shard selection for Indexed Jobs.

`--shard-index/--num-shards` default from the environment Kubernetes gives an
Indexed Job's pods (`JOB_COMPLETION_INDEX`; the operator also sets
`MARCO_NUM_SHARDS` to the Job's completions), so the same command works as one
local process and as N pods.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"--num-shards must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"--shard-index must be in [0, {self.count}), got {self.index}")

    def select(self, items: Sequence[T]) -> list[T]:
        """Round-robin assignment: item i belongs to shard i mod count."""
        return [item for i, item in enumerate(items) if i % self.count == self.index]

    def owns(self, position: int) -> bool:
        return position % self.count == self.index


def shard_from_args(index: int | None, count: int | None) -> Shard:
    env = os.environ
    if index is None:
        index = int(env.get("JOB_COMPLETION_INDEX", "0"))
    if count is None:
        count = int(env.get("MARCO_NUM_SHARDS", "1"))
    return Shard(index=index, count=count)


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard-index",
        type=int,
        default=None,
        help="this shard (default: $JOB_COMPLETION_INDEX or 0)",
    )
    parser.add_argument(
        "--num-shards",
        type=int,
        default=None,
        help="number of shards (default: $MARCO_NUM_SHARDS or 1)",
    )

"""Rendering many utterances in worker processes, with one progress bar: what the demo's
data and the benchmark scenarios both do."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_parallel(
    work: Callable[[T], R], items: Sequence[T], workers: int, label: str
) -> Iterator[R]:
    """``work(item)`` for every item in ``workers`` processes, yielded as each finishes
    (callers that need an order sort the results). ``work`` must be picklable: a
    module-level function, or a functools.partial of one."""
    from tqdm import tqdm

    with (
        ProcessPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(items), desc=label, unit="utt", file=sys.stderr) as bar,
    ):
        futures = [pool.submit(work, item) for item in items]
        for future in as_completed(futures):
            bar.update()
            yield future.result()

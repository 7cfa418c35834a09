"""The names of an adaptation's stage jobs, one rule for both drivers.

The status reports `<name>-<stage>` whichever driver runs the stage: a Job of
that name in a cluster, a process the local driver tracks under it. A stage of
several jobs (the LR trials) adds each one's index: `<name>-trials-0`.
"""

from __future__ import annotations


def job_name(adaptation: str, stage: str, index: int | None = None) -> str:
    return f"{adaptation}-{stage}" if index is None else f"{adaptation}-{stage}-{index}"

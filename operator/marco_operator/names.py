"""The names of an adaptation's stage jobs, one rule for both drivers.

The status reports `<name>-<stage>` whichever driver runs the stage: a Job of
that name in a cluster, a process the local driver tracks under it.
"""

from __future__ import annotations


def job_name(adaptation: str, stage: str) -> str:
    return f"{adaptation}-{stage}"

"""Watching the operator's directive file (a mounted ConfigMap or a plain file).

Checked every step, so it must be cheap: one ``stat`` unless the file changed.
A file that does not parse keeps the directive in force and is reported once.
At a cycle's boundary the loop waits here for the next cycle's directive
(``wait_for_next``), so that a cycle starts at the same step in every run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from marco_contract.formats import Directive

log = logging.getLogger(__name__)


#: Seconds between looks at the file while waiting at a cycle's boundary: one ``stat``
#: each, and the wait ends at most this long after the operator wrote the directive.
WAIT_POLL_SECONDS = 0.1


class DirectiveWatcher:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        self._seen: tuple[int, int, int] | None = None
        self.invalid_reads = 0

    def poll(self) -> Directive | None:
        """The directive if the file changed since the last call and parses, else None."""
        if self.path is None:
            return None
        try:
            # stat follows the ..data symlink Kubernetes swaps on ConfigMap updates.
            st = self.path.stat()
        except FileNotFoundError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key == self._seen:
            return None
        self._seen = key
        try:
            return Directive.model_validate_json(self.path.read_bytes())
        except (ValidationError, ValueError, OSError) as error:
            self.invalid_reads += 1
            log.warning("--control-file %s: ignored, not a valid directive: %s", self.path, error)
            return None

    def wait_for_next(
        self,
        current: Directive,
        timeout: float,
        *,
        interval: float = WAIT_POLL_SECONDS,
        cancelled: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Directive | None:
        """Block until the file holds a directive past ``current`` (a later cycle, or a stop).

        None when ``timeout`` seconds pass first, or when ``cancelled()`` turns true
        (SIGTERM: a suspended Job must save and exit within its grace period). A
        directive read meanwhile that is not past ``current`` (the same cycle written
        again) is passed over; it changes nothing the trainer does.
        """
        deadline = clock() + timeout
        while True:
            directive = self.poll()
            if directive is not None and is_next(directive, current):
                return directive
            if cancelled() or clock() >= deadline:
                return None
            sleep(interval)


def differs(new: Directive, current: Directive | None) -> bool:
    """Whether ``new`` changes what the trainer does (a new cycle, LR, or a stop)."""
    if current is None:
        return True
    return (new.cycle, new.learning_rate, new.stop) != (
        current.cycle,
        current.learning_rate,
        current.stop,
    )


def is_next(new: Directive, current: Directive) -> bool:
    """Whether ``new`` ends ``current``'s cycle: a later cycle, or a stop."""
    return new.stop or new.cycle > current.cycle

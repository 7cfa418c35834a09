"""Watching the operator's directive file (a mounted ConfigMap or a plain file).

Checked every step, so it must be cheap: one ``stat`` unless the file changed.
A file that does not parse keeps the directive in force and is reported once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from marco_contract.formats import Directive

log = logging.getLogger(__name__)


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


def differs(new: Directive, current: Directive | None) -> bool:
    """Whether ``new`` changes what the trainer does (a new cycle, LR, or a stop)."""
    if current is None:
        return True
    return (new.cycle, new.learning_rate, new.stop) != (
        current.cycle,
        current.learning_rate,
        current.stop,
    )

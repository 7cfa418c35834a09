"""Exit codes of `marco-trainer` that say "retrying will not help".

The operator's stage Jobs fail at once on these (their podFailurePolicy's FailJob rule)
instead of spending `resources.backoffLimit` on pods that would fail the same way. Any
other non-zero exit (a crash, an OOM kill, a lost node) stays retriable.
"""

from __future__ import annotations

import sys
from typing import NoReturn

#: argparse's usage error: a flag the image does not know or a value of the wrong type
#: (an operator and a trainer image of different versions). Emitted by argparse itself.
USAGE = 2
#: The stage's options are outside the spec's bounds (`marco_contract.argv.parse_options`
#: refused them) or its manifests cannot be read: the same arguments would be refused
#: again. Emitted through `refuse` (train, evaluate) and by filter, profile and augment.
BAD_INPUT = 3
#: Every code a retry cannot fix, in the order above.
NOT_RETRIABLE: tuple[int, ...] = (USAGE, BAD_INPUT)


class Refused(SystemExit):
    """A SystemExit with BAD_INPUT as its code and the reason as its text."""

    def __init__(self, message: str) -> None:
        super().__init__(BAD_INPUT)
        self.message = message

    def __str__(self) -> str:
        return self.message


def refuse(message: str) -> NoReturn:
    """Print `message` (the container's last words under FallbackToLogsOnError: an exit
    with an int code prints nothing) and exit with BAD_INPUT."""
    print(message, file=sys.stderr, flush=True)
    raise Refused(message)

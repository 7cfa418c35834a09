"""Reading rank 0's evaluation history over HTTP, for both drivers.

Rank 0 serves `/v1/evaluations`: on its API port of a pod IP in a cluster, where
it asks for the adaptation's bearer token (`endpoint_auth`), and on its metrics
port of loopback for `marco run`, where it asks for none. A history that cannot
be read is None, never an exception: training may not be up yet, or be between
restarts, and the core then keeps what the status says. Whether the port refused
tells the kopf driver which it is: a rank 0 still starting (TRAINER_STARTUP_SECONDS)
is no error, a 401 or a timeout always is.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import dataclass

from pydantic import ValidationError

from marco_contract.formats import EvaluationHistory

logger = logging.getLogger(__name__)

EVALUATIONS_PATH = "/v1/evaluations"
#: Seconds a pass waits for rank 0's answer (`marco operator --trainer-timeout`).
TRAINER_TIMEOUT_SECONDS = 2.0
#: How long after its container started a rank 0 may refuse connections before a pass
#: counts it as a `trainer` error. The trainer serves before it loads the model, so this
#: covers torchrun's rendezvous, the processes' start and their imports (measured by
#: benchmarks/trainer_startup.py). Past it, a port nobody listens on is trouble.
TRAINER_STARTUP_SECONDS = 120.0


def evaluations_url(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host  # an IPv6 pod IP
    return f"http://{host}:{port}{EVALUATIONS_PATH}"


@dataclass(frozen=True)
class Rank0Read:
    """One read of rank 0's history: the history, or None and whether the port refused."""

    history: EvaluationHistory | None
    #: Nothing listened (connection refused): a rank 0 not serving yet, or between restarts.
    #: A 401, a timeout or a body that is no history is trouble of another kind.
    refused: bool = False


def read_evaluations(url: str, timeout: float, token: str | None = None) -> Rank0Read:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Rank0Read(EvaluationHistory.model_validate_json(response.read()))
    # URLError and TimeoutError are OSErrors; a half-written body fails validation.
    except (OSError, ValidationError) as error:
        logger.info("rank 0 at %s not readable: %s", url, error)
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        return Rank0Read(None, refused=isinstance(reason, ConnectionRefusedError))


def fetch_evaluations(
    url: str, timeout: float, token: str | None = None
) -> EvaluationHistory | None:
    return read_evaluations(url, timeout, token).history

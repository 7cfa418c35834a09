"""Reading rank 0's evaluation history over HTTP, for both drivers.

Rank 0 serves `/v1/evaluations`: on its API port of a pod IP in a cluster, where
it asks for the adaptation's bearer token (`endpoint_auth`), and on its metrics
port of loopback for `marco run`, where it asks for none. A history that cannot
be read is None, never an error: training may not be up yet, or be between
restarts, and the core then keeps what the status says.
"""

from __future__ import annotations

import logging
import urllib.request

from pydantic import ValidationError

from marco_contract.formats import EvaluationHistory

logger = logging.getLogger(__name__)

EVALUATIONS_PATH = "/v1/evaluations"


def evaluations_url(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host  # an IPv6 pod IP
    return f"http://{host}:{port}{EVALUATIONS_PATH}"


def fetch_evaluations(
    url: str, timeout: float, token: str | None = None
) -> EvaluationHistory | None:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return EvaluationHistory.model_validate_json(response.read())
    # URLError and TimeoutError are OSErrors; a half-written body fails validation.
    except (OSError, ValidationError) as error:
        logger.info("rank 0 at %s not readable: %s", url, error)
        return None

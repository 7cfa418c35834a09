"""Reading rank 0's evaluation history over HTTP, for both drivers.

Rank 0 serves `/v1/evaluations` on its metrics port: a pod IP in a cluster,
loopback for `marco run`. A history that cannot be read is None, never an
error: training may not be up yet, or be between restarts, and the core then
keeps what the status says.
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


def fetch_evaluations(url: str, timeout: float) -> EvaluationHistory | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return EvaluationHistory.model_validate_json(response.read())
    # URLError and TimeoutError are OSErrors; a half-written body fails validation.
    except (OSError, ValidationError) as error:
        logger.info("rank 0 at %s not readable: %s", url, error)
        return None

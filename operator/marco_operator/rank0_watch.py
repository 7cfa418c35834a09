"""Learning of rank 0's new evaluations as they come, for the kopf driver.

A pass reads rank 0's history (rank0.fetch_evaluations) and decides; what makes it run
soon after an evaluation is this follower: one long poll per training adaptation
(`/v1/evaluations?after=N&wait=S`, marco_trainer.metrics_server) that rank 0 answers
when it holds more than N evaluations, or has finished, or S seconds passed. On a change
the follower wakes the adaptation's loop, and the pass reads the history again and
decides: a decision never rests on what the follower saw.

Why a long poll: rank 0 already serves the history behind the adaptation's bearer token,
so nothing new is granted (a trainer writing an annotation or an Event would need API
rights, and a token, in every train pod); the operator sends one request per evaluation
instead of one per adaptation per poll, and learns of it within a round trip. A trainer
that does not hold the request (an older image) answers at once: the follower then asks
again only every `interval`, the driver's passes' own rhythm.

All on the driver's event loop (aiohttp), no thread per adaptation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
from pydantic import ValidationError

from marco_contract.formats import EvaluationHistory

logger = logging.getLogger(__name__)

#: Seconds rank 0 may hold one long poll (the trainer caps it at its MAX_WAIT, 8 s).
WAIT = 8.0


def long_poll_url(url: str, after: int, wait: float) -> str:
    return f"{url}?after={after}&wait={wait:g}"


async def follow(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    seen: int,
    wake: Callable[[], None],
    *,
    interval: float,
    timeout: float,
    wait: float = WAIT,
) -> None:
    """Long-poll `url` (rank 0's /v1/evaluations) until cancelled or training has finished;
    call `wake` whenever the number of evaluations differs from `seen` (more: a new one;
    fewer: a rank 0 restarted from an older checkpoint), or training finished.

    Unreachable or unreadable, rank 0 is asked again after `interval`, and `wake` called
    each time: the passes say why.
    """
    headers = {"Authorization": f"Bearer {token}"}
    limit = aiohttp.ClientTimeout(total=wait + timeout)
    while True:
        asked = time.monotonic()
        try:
            async with session.get(
                long_poll_url(url, seen, wait), headers=headers, timeout=limit
            ) as response:
                response.raise_for_status()
                history = EvaluationHistory.model_validate_json(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValidationError) as error:
            logger.debug("rank 0 at %s not followed: %s", url, error)
            # The follower stands in for the timed passes (kopf_driver.wait_seconds): a pass
            # says that rank 0 cannot be read, once per interval, as a timed pass did.
            wake()
            await asyncio.sleep(interval)
            continue
        count = len(history.evaluations)
        if count != seen or history.finished:
            seen = count
            wake()
            if history.finished:
                return  # nothing more will come; the passes take it from here
        elif time.monotonic() - asked < wait / 2:
            # Answered at once with nothing new: this rank 0 does not hold requests.
            await asyncio.sleep(interval)

"""The rank 0 follower (rank0_watch.follow) against a loopback rank 0 that cannot be read.

The follower stands in for the driver's timed passes while training (kopf_driver's
wait_seconds), so a rank 0 it cannot read must still bring a pass (which says why) once
per interval, and one that answers with nothing new must bring none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import aiohttp.web

from marco_contract.formats import EvaluationHistory
from marco_operator.rank0_watch import follow

Handler = Callable[[aiohttp.web.Request], Awaitable[aiohttp.web.Response]]


async def _follow_for(handler: Handler, asks: int) -> tuple[list[int], int]:
    """Follow a rank 0 served by `handler` until it was asked `asks` times: the number of
    asks made before each wake, and the asks in all."""
    asked = 0
    enough = asyncio.Event()

    async def counted(request: aiohttp.web.Request) -> aiohttp.web.Response:
        nonlocal asked
        asked += 1
        if asked >= asks:
            enough.set()
        return await handler(request)

    app = aiohttp.web.Application()
    app.router.add_get("/v1/evaluations", counted)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    wakes: list[int] = []
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/evaluations"
            task = asyncio.create_task(
                follow(session, url, "token", 0, lambda: wakes.append(asked),
                       interval=0.05, timeout=1.0)
            )  # fmt: skip
            await asyncio.wait_for(enough.wait(), 10)
            task.cancel()
    finally:
        await runner.cleanup()
    return wakes, asked


def test_a_rank_0_that_cannot_be_read_wakes_the_loop_once_per_failed_read() -> None:
    async def unavailable(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(status=503)

    wakes, asked = asyncio.run(_follow_for(unavailable, asks=4))
    # Each read failed and woke the loop before the next was asked.
    assert wakes[:3] == [1, 2, 3]
    assert len(wakes) in (asked - 1, asked)


def test_a_rank_0_with_nothing_new_wakes_nothing() -> None:
    empty = EvaluationHistory(adaptation="a", evaluations=[], directive=None, finished=False)

    async def nothing_new(request: aiohttp.web.Request) -> aiohttp.web.Response:
        # Answered at once, as a trainer older than the long poll does.
        return aiohttp.web.Response(
            body=empty.model_dump_json().encode(), content_type="application/json"
        )

    wakes, asked = asyncio.run(_follow_for(nothing_new, asks=4))
    assert asked >= 4
    assert wakes == []
